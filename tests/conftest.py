"""Shared fixtures: tiny random encoders and the real data under ../shared/data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """A folder of the staged real data; the test is skipped (with the reason) where it is absent."""
    folder = SHARED_DATA / name
    if not folder.exists():
        pytest.skip(f"real data {folder} is not here")
    return folder


@pytest.fixture(scope="session", autouse=True)
def encode_cache(tmp_path_factory):
    """The encode cache lives in a temporary folder for the whole session, never in ~/.cache."""
    previous = os.environ.get("CONTRIEVER_CACHE")
    folder = tmp_path_factory.mktemp("encode-cache")
    os.environ["CONTRIEVER_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CONTRIEVER_CACHE", None)
    else:
        os.environ["CONTRIEVER_CACHE"] = previous


@pytest.fixture
def scifact_dir() -> Path:
    return shared_data("scifact")


@pytest.fixture(scope="session")
def tiny_encoder():
    """A 2-layer, 32-wide random BERT with the default model's vocabulary (mean pooling, dot)."""
    from contriever.model.encoder import Encoder

    encoder = Encoder.from_scratch(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, seed=0
    )
    encoder.eval()
    return encoder


@pytest.fixture(scope="session")
def tiny_model(tiny_encoder, tmp_path_factory) -> Path:
    """`tiny_encoder` saved as a model folder (read-only for the tests that load it)."""
    return tiny_encoder.save(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def default_encoder():
    from contriever.model.encoder import Encoder

    return Encoder.load()


@pytest.fixture(scope="session")
def token_folder(tmp_path_factory) -> Path:
    """A prepared token stream from a few hundred synthetic documents."""
    from contriever.data.prepare import prepare
    from contriever.model.encoder import default_model_path

    root = tmp_path_factory.mktemp("tokens")
    words = [
        "retrieval",
        "dense",
        "contrastive",
        "learning",
        "query",
        "document",
        "passage",
        "negative",
        "queue",
        "momentum",
    ]
    lines = []
    for i in range(300):
        text = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(40 + i % 30))
        lines.append(json.dumps({"id": str(i), "text": f"document {i} {text}"}))
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    return prepare([root / "docs.jsonl"], str(default_model_path()), root / "prepared", workers=1)
