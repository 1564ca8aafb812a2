"""Shared fixtures: tiny random encoders and the real data under ../shared/data."""

from __future__ import annotations

import gzip
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


def write_beir_folder(
    folder: Path,
    corpus: dict[str, tuple[str, str]],
    queries: dict[str, str],
    qrels: dict[str, list[tuple[str, str, int]]],
    *,
    gzip_corpus: bool = False,
) -> Path:
    """A BEIR folder: `corpus.jsonl[.gz]` from `{id: (title, text)}`, `queries.jsonl`, `qrels/SPLIT.tsv`."""
    (folder / "qrels").mkdir(parents=True)
    lines = "".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in corpus.items())
    if gzip_corpus:
        with gzip.open(folder / "corpus.jsonl.gz", "wt") as handle:
            handle.write(lines)
    else:
        (folder / "corpus.jsonl").write_text(lines)
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    )
    for split, rows in qrels.items():
        (folder / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows)
        )
    return folder


@pytest.fixture(scope="session")
def write_beir():
    """`write_beir_folder`, for the tests that build a tiny BEIR folder of their own."""
    return write_beir_folder


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
