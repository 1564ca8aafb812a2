"""Checkpoints: plain contents loaded with weights_only=True; code-carrying or truncated files refused."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from contriever.errors import DataError
from contriever.training.checkpoint import (
    load_checkpoint,
    peek_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tests.hostile import Payload


def draws() -> tuple:
    return torch.rand(3).tolist(), random.random(), np.random.rand(2).tolist()


def test_generator_states_round_trip_through_a_weights_only_load(tmp_path):
    np.random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    random.seed(5)
    state = {"step": 7, "rng": [rng_state()], "sampler": np.random.default_rng(1).bit_generator.state}
    expected = draws()
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    loaded = load_checkpoint(tmp_path / "checkpoint.pt")
    set_rng_state(loaded["rng"][0])
    assert draws() == expected
    generator = np.random.default_rng()
    generator.bit_generator.state = loaded["sampler"]
    assert generator.random() == np.random.default_rng(1).random()
    assert peek_checkpoint(tmp_path / "checkpoint.pt") == (7, None)


def test_a_checkpoint_carrying_a_pickled_callable_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "checkpoint.pt"
    torch.save({"step": 1, "encoder": {}, "extra": Payload(marker)}, path)
    with pytest.raises(DataError, match=r"checkpoint\.pt: refused: .*could run code"):
        load_checkpoint(path)
    with pytest.raises(DataError, match="refused"):
        peek_checkpoint(path)
    assert not marker.exists()
    # The payload is live: an unrestricted load runs it (what the old code did on resume).
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "w": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(DataError, match=r"cannot be read as a checkpoint .*truncated"):
        load_checkpoint(path)
    assert load_checkpoint(tmp_path / "absent.pt") is None
