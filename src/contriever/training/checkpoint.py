"""Checkpoints that carry everything needed for an exact resume, written atomically.

A checkpoint holds the model, the objective's state (MoCo key encoder and queue), the optimizer, the
scheduler, every random generator (torch CPU and CUDA, the data sampler's numpy generators) and the
step. `save_checkpoint` writes to a temporary file and renames it over the old one, so a run killed
at any moment leaves either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from contriever.io import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    with atomic_write(path, "wb") as handle:
        torch.save(state, handle)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    # Our own files: they hold numpy generator states and python tuples, not only tensors.
    return torch.load(path, map_location=map_location, weights_only=False)
