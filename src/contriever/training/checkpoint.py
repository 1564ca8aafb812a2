"""Checkpoints that carry everything needed for an exact resume, written atomically, loaded safely.

A checkpoint holds the model, the objective's state (MoCo key encoder and queue), the optimizer, the
scheduler, every random generator (torch CPU and CUDA, Python's, numpy's global one, the data
sampler's numpy generators) and the step. `save_checkpoint` writes to a temporary file and renames
it over the old one (checked, fsynced), so a run killed at any moment, or a full disk, leaves either
the previous checkpoint or the new one, never a torn file.

Everything in it is a tensor or a plain value (dict, list, tuple, str, int, float, bool, None), so it
loads with `torch.load(weights_only=True)`: a checkpoint crafted to run code when unpickled (a shared
run folder, a downloaded resume point) is refused instead of executed.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from contriever.errors import DataError
from contriever.io import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict:
    """Every global generator's state, as tensors and plain values."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),  # (version, tuple of 625 ints, float or None)
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),  # uint32 words, exactly
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["name"],
            saved["keys"].numpy().astype(np.uint32),
            saved["position"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tensor_bytes(obj) -> int:
    """Bytes of tensor data in a nested state (for the disk-full message's "needed")."""
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(value) for value in obj)
    return 0


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write `state` (tensors and plain values only) to `path`; disk full -> `DiskFullError`."""
    with atomic_write(path, "wb", size_hint=_tensor_bytes(state)) as handle:
        torch.save(state, handle)


def peek_checkpoint(path: str | os.PathLike) -> tuple[int, dict | None]:
    """(step, config) of a checkpoint, read without loading its tensors (memory-mapped)."""
    state = _safe_load(Path(path), map_location="cpu", mmap=True)
    return int(state["step"]), state.get("config")


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict | None:
    """The checkpoint at `path` (None when there is none).

    Loaded with `weights_only=True`: anything but tensors and plain values (a pickled function or
    class, which could run code) is refused with a DataError, as is a truncated or foreign file.
    """
    path = Path(path)
    if not path.exists():
        return None
    return _safe_load(path, map_location=map_location)


def _safe_load(path: Path, **kwargs) -> dict:
    try:
        state = torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as error:
        # torch's message suggests weights_only=False; keep only what it found ("GLOBAL getattr").
        found = re.search(r"Unsupported (?:global|operand)[^.]*?(?= was not|\.|$)", str(error))
        reason = found.group(0) if found else "not tensors and plain values"
        raise DataError(
            path,
            "refused: it holds Python objects other than tensors and plain values, and loading it could "
            f"run code ({reason}). Resume only from checkpoints contriever wrote; to start afresh, "
            "delete it or choose another output folder",
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(
            path,
            f"cannot be read as a checkpoint ({reason}); it may be truncated. Delete it to start afresh",
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise DataError(path, "not a contriever checkpoint (no training step in it)")
    return state
