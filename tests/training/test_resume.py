"""Resuming into an output folder: only the same run continues, and only one process at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from test_trainer import pretrain_config

from contriever.errors import ConfigError, DataError
from contriever.io import LOCK_NAME, FolderLockedError, verify_manifest
from contriever.training.resume import SAFE_ON_RESUME, compare_resume_config
from contriever.training.trainer import train


def test_compare_resume_config_lists_every_unsafe_difference():
    saved = {"optim": {"lr": 1e-3, "betas": [0.9, 0.98]}, "train": {"steps": 8, "log_every": 1}}
    same = {"optim": {"lr": 1e-3, "betas": (0.9, 0.98)}, "train": {"steps": 8, "log_every": 1}}
    assert compare_resume_config(saved, same, 4) == {}
    extended = {"optim": saved["optim"], "train": {"steps": 20, "log_every": 5}}
    assert compare_resume_config(saved, extended, 4) == {
        "train.log_every": (1, 5),
        "train.steps": (8, 20),
    }
    changed = {"optim": {"lr": 2e-3, "betas": [0.9, 0.99]}, "train": {"steps": 8, "log_every": 1}, "x": 1}
    with pytest.raises(ConfigError) as caught:
        compare_resume_config(saved, changed, 4)
    message = str(caught.value)
    for part in ("optim.lr: 0.001 -> 0.002", "optim.betas: [0.9, 0.98] -> [0.9, 0.99]", "x: '<absent>' -> 1"):
        assert part in message
    assert all(key in message for key in SAFE_ON_RESUME)
    with pytest.raises(ConfigError, match=r"train\.steps: 8 -> 3"):
        compare_resume_config(saved, {**saved, "train": {"steps": 3, "log_every": 1}}, 4)


def _snapshot(folder):
    """Every file's bytes, but the lock file's (each run rewrites who holds it)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != LOCK_NAME}


def test_resume_with_a_changed_config_is_refused_before_anything_is_written(token_folder, tmp_path):
    run = tmp_path / "run"
    train(pretrain_config(token_folder, "train.steps=4", "train.save_every=2"), run)
    before = _snapshot(run)
    changed_lr = pretrain_config(token_folder, "train.steps=4", "train.save_every=2", "optim.lr=2e-3")
    with pytest.raises(ConfigError, match=r"optim\.lr: 0\.001 -> 0\.002"):
        train(changed_lr, run)
    # A new architecture is refused the same way, not by a size-mismatch traceback mid-load.
    wider = pretrain_config(token_folder, "train.steps=4", "train.save_every=2", "model.hidden_size=64")
    with pytest.raises(ConfigError, match=r"model\.hidden_size: 32 -> 64"):
        train(wider, run)
    assert _snapshot(run) == before  # config.json, checkpoint, metrics: all as they were


def test_extending_steps_on_resume_is_applied_and_logged(token_folder, tmp_path):
    run = tmp_path / "run"
    train(pretrain_config(token_folder, "train.steps=3", "train.save_every=3"), run)
    train(pretrain_config(token_folder, "train.steps=5", "train.save_every=3", "train.log_every=2"), run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[3] == {
        "step": 3,
        "resume_changes": {
            "train.log_every": {"old": 1, "new": 2},
            "train.steps": {"old": 3, "new": 5},
        },
    }
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5]
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 5
    assert set(verify_manifest(run)["files"]) == {"config.json", "checkpoint.pt", "summary.json"}


def test_a_truncated_checkpoint_is_named_on_resume(token_folder, tmp_path):
    run = tmp_path / "run"
    config = pretrain_config(token_folder, "train.steps=2", "train.save_every=2")
    train(config, run)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"checkpoint\.pt: .* bytes, manifest\.json says .*: truncated"):
        train(config, run)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from contriever.io import folder_lock
    with folder_lock(sys.argv[1], "pretrain"):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def test_a_second_run_on_the_same_output_is_refused_at_start(token_folder, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            FolderLockedError, match=rf"in use by another process \(`contriever pretrain`, pid {holder.pid}"
        ):
            train(pretrain_config(token_folder, "train.steps=2"), run)
        assert not (run / "config.json").exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    train(pretrain_config(token_folder, "train.steps=2"), run)  # the dead holder's lock is gone
    assert (run / "model").is_dir()
