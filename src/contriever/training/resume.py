"""Resuming into an existing output folder: one writer at a time, and only the run that is there.

`train` continues from `output/checkpoint.pt` when there is one. Two things could silently turn that
into a different run, and both are refused here, before anything in the folder is changed:

- another process training into the same folder (each would overwrite the other's checkpoints):
  `output_lock` holds `contriever.io.folder_lock` on it for the whole run;
- a config that differs from the folder's `config.json`: the checkpoint's weights, optimizer and
  schedule belong to the saved config, so a new learning rate would be ignored and a new architecture
  would not fit. `compare_resume_config` lists every differing key and refuses, except the keys in
  `SAFE_ON_RESUME`, which change only how long the run goes on or how often it reports: those are
  applied and logged.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path

from contriever.errors import ConfigError, DataError
from contriever.io import folder_lock, verify_manifest, write_json, write_manifest
from contriever.training.checkpoint import CHECKPOINT_NAME, peek_checkpoint

CONFIG_NAME = "config.json"
SUMMARY_NAME = "summary.json"

# Keys that may change when resuming, with why it is safe: none alters the trajectory of the
# updates already made or to come (the data order, the model, the loss, the optimizer).
SAFE_ON_RESUME = {
    "train.steps": "extends (or shortens, not below the checkpoint's step) the run",
    "train.max_minutes": "a wall-time limit for this invocation",
    "train.log_every": "how often metrics are logged",
    "train.save_every": "how often checkpoints are written",
    "train.eval_every": "how often the model is evaluated",
    "train.early_stopping_patience": "when to stop after evaluations stop improving",
    "eval.batch_size": "evaluation batch size (speed only)",
}


def output_lock(output: str | os.PathLike, command: str):
    """The folder lock for a training run; under torchrun only rank 0 takes it (one per run)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return nullcontext(Path(output))
    return folder_lock(output, command)


def flatten(config: dict, prefix: str = "") -> dict:
    """{"train": {"steps": 10}} -> {"train.steps": 10}; lists and tuples compare as lists."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def saved_config(output: Path) -> dict | None:
    """The folder's `config.json` (None when the folder holds none)."""
    path = output / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(path, f"not valid JSON ({error.msg})", error.lineno) from None
    if not isinstance(saved, dict):
        raise DataError(path, "not a config (expected a JSON object)")
    return saved


def compare_resume_config(saved: dict, new: dict, checkpoint_step: int | None = None) -> dict:
    """Changes from `saved` to `new` that are safe on resume, as {key: (old, new)}.

    Raises ConfigError listing every other key that differs (old and new values), so nothing in the
    folder is touched by a run that cannot continue it.
    """
    old_flat, new_flat = flatten(saved), flatten(new)
    changed = {
        key: (old_flat.get(key, "<absent>"), new_flat.get(key, "<absent>"))
        for key in sorted(old_flat.keys() | new_flat.keys())
        if old_flat.get(key, "<absent>") != new_flat.get(key, "<absent>")
    }
    refused = {key: values for key, values in changed.items() if key not in SAFE_ON_RESUME}
    steps = changed.get("train.steps")
    if steps is not None and checkpoint_step is not None and steps[1] < checkpoint_step:
        refused["train.steps"] = steps
    if refused:
        details = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in refused.items())
        safe = ", ".join(SAFE_ON_RESUME)
        raise ConfigError(
            f"this folder holds a run with another config and resuming would mix the two. Differing "
            f"keys: {details}. Only these may change on resume: {safe}"
            + (f" (train.steps not below the checkpoint's step {checkpoint_step})" if steps else "")
            + ". Use another --output for a new run, or delete checkpoint.pt there to start afresh."
        )
    return {key: values for key, values in changed.items() if key not in refused}


def start_run_folder(output: Path, config: dict, is_main: bool) -> dict:
    """Check a resume against the folder, then (main process) write `config.json`.

    When `output` holds a checkpoint: its sizes are checked against the run manifest, and `config`
    is compared with the folder's `config.json` (else the checkpoint's own copy) before anything is
    written. Returns the safe changes applied, {key: (old, new)} ({} for a fresh run).
    """
    changes: dict = {}
    checkpoint = output / CHECKPOINT_NAME
    if checkpoint.exists():
        verify_manifest(output, required=False)
        step, checkpoint_config = peek_checkpoint(checkpoint)
        saved = saved_config(output) or checkpoint_config
        if saved is not None:
            changes = compare_resume_config(saved, config, step)
    if is_main:
        output.mkdir(parents=True, exist_ok=True)
        write_json(output / CONFIG_NAME, config)
        if checkpoint.exists():
            write_run_manifest(output)  # config.json may have changed (safe keys): keep them in step
    return changes


def write_run_manifest(output: Path) -> None:
    """The run folder's manifest: config, checkpoint and summary (model/ and best/ have their own).

    `metrics.jsonl` is left out: it grows after every checkpoint, and resume trims it to the step.
    """
    names = [CONFIG_NAME, CHECKPOINT_NAME, SUMMARY_NAME]
    write_manifest(output, [name for name in names if (output / name).is_file()])


def announce_resume_changes(changes: dict, step: int, log_write, is_main: bool) -> None:
    """Record the safe changes a resume applied: a `resume_changes` line in metrics.jsonl, and stderr."""
    if not changes:
        return
    log_write(
        {"step": step, "resume_changes": {key: {"old": a, "new": b} for key, (a, b) in changes.items()}}
    )
    if is_main:
        from tqdm.auto import tqdm

        listed = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changes.items())
        tqdm.write(f"resuming at step {step} with changed settings: {listed}")
