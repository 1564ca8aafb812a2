"""Every load path refuses a file crafted to run code, and runs none of it (issue 12, part 1).

Checkpoints: tests/training/test_checkpoint.py. Here: index shards and FAISS files, token folders,
BM25 folders, and model folders (custom code, pickled weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contriever.data.prepare import TokenDataset
from contriever.errors import DataError
from contriever.io import write_manifest
from contriever.model.encoder import Encoder
from contriever.retrieval.shards import open_index, write_index
from tests.hostile import Payload


def pickled_array(path: Path, marker: Path) -> None:
    np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)


def test_an_index_shard_holding_pickled_objects_is_refused(tmp_path):
    vectors = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    folder = write_index(tmp_path / "idx", [f"d{i}" for i in range(20)], vectors)
    marker = tmp_path / "marker.txt"
    pickled_array(folder / "embeddings-00000.npy", marker)
    manifest = json.loads(
        (folder / "index.json").read_text()
    )  # sizes consistent: only the content is hostile
    manifest["shards"][0]["vectors_bytes"] = (folder / "embeddings-00000.npy").stat().st_size
    (folder / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"embeddings-00000\.npy: cannot read embeddings shard"):
        open_index(folder)
    assert not marker.exists()


def test_a_token_folder_with_pickled_offsets_is_refused(tmp_path):
    from contriever.data.prepare import prepare
    from contriever.model.encoder import default_model_path

    (tmp_path / "docs.txt").write_text("one document\nanother document\n")
    folder = prepare([tmp_path / "docs.txt"], str(default_model_path()), tmp_path / "tokens", workers=1)
    marker = tmp_path / "marker.txt"
    pickled_array(folder / "doc_offsets.npy", marker)
    write_manifest(folder)
    with pytest.raises(DataError, match=r"doc_offsets\.npy: cannot read document offsets"):
        TokenDataset(folder)
    assert not marker.exists()


@pytest.fixture
def model_folder(tiny_encoder, tmp_path) -> Path:
    return tiny_encoder.save(tmp_path / "model")


def test_custom_code_in_a_model_folder_never_runs(model_folder, tmp_path):
    marker = tmp_path / "marker.txt"
    (model_folder / "modeling_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('code ran')\n"
        "from transformers import BertModel\nclass EvilModel(BertModel):\n    pass\n"
    )
    config = json.loads((model_folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "modeling_evil.EvilConfig"}
    (model_folder / "config.json").write_text(json.dumps(config))
    write_manifest(model_folder)
    # A known architecture loads as the library's own class, ignoring the folder's code ...
    encoder = Encoder.load(model_folder)
    assert type(encoder.model).__name__ == "BertModel"
    # ... and an unknown one is refused rather than run.
    config["model_type"] = "evil-bert"
    (model_folder / "config.json").write_text(json.dumps(config))
    write_manifest(model_folder)
    with pytest.raises((ValueError, OSError)):
        Encoder.load(model_folder)
    assert not marker.exists()


def test_pickled_model_weights_are_refused(model_folder, tmp_path):
    from safetensors.torch import load_file

    marker = tmp_path / "marker.txt"
    weights = load_file(model_folder / "model.safetensors")
    (model_folder / "model.safetensors").unlink()
    torch.save({**weights, "hostile": Payload(marker)}, model_folder / "pytorch_model.bin")
    write_manifest(model_folder)
    with pytest.raises(DataError, match=r"pytorch_model\.bin: refused: pickled weights .*nothing in it ran"):
        Encoder.load(model_folder)
    assert not marker.exists()


def test_a_model_folder_whose_files_do_not_match_its_manifest_is_refused(model_folder):
    weights = model_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"model\.safetensors: .* bytes, manifest\.json says .*: truncated"):
        Encoder.load(model_folder)
