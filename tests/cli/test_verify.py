"""`contriever verify FOLDER`: exit code 0 when every file is as written, 2 when one is damaged or the
folder is not ours; one line per bad file (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contriever.cli.main import main
from contriever.io import write_json
from contriever.retrieval.ann import build_ann
from contriever.retrieval.shards import write_index

pytestmark = pytest.mark.bad_input


def make_index(folder: Path, seed: int = 0) -> Path:
    vectors = np.random.default_rng(seed).standard_normal((300, 16)).astype(np.float32)
    return write_index(folder, [f"d{i}" for i in range(300)], vectors, shard_rows=100)


def verify(capsys, *folders) -> tuple[int, list[str]]:
    code = main(["verify", *map(str, folders)])
    return code, capsys.readouterr().out.splitlines()


def flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_an_index_and_its_ann_verify_good_then_each_damaged_file_is_one_line(tmp_path, capsys):
    folder = make_index(tmp_path / "idx")
    build_ann(folder, "IVF4,Flat", name="ivf", show_progress=False)
    code, lines = verify(capsys, folder)
    assert code == 0 and lines[-1].startswith(f"{folder}: index folder good: ")
    flip_bit(folder / "embeddings-00001.npy")
    flip_bit(folder / "ann" / "ivf" / "index.faiss")
    ids = folder / "ids-00002.txt"
    swapped = ids.read_text().splitlines(keepends=True)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    ids.write_text("".join(swapped))
    code, lines = verify(capsys, folder)
    assert code == 2
    bad = [line for line in lines[:-1] if not line.startswith("note:")]
    assert len(bad) == 3, lines
    assert any(line.startswith(f"{folder / 'embeddings-00001.npy'}: contents changed") for line in bad)
    assert any(line.startswith(f"{ids}: contents changed") for line in bad)
    assert any(line.startswith(f"{folder / 'ann' / 'ivf' / 'index.faiss'}: contents changed") for line in bad)
    assert lines[-1] == f"{folder}: 3 problem(s) found" + lines[-1].split("found", 1)[1]


def test_an_ann_folder_verified_alone_checks_its_source(tmp_path, capsys):
    folder = make_index(tmp_path / "a")
    ann = build_ann(folder, "HNSW8", name="h", show_progress=False)
    assert verify(capsys, ann)[0] == 0
    other = make_index(tmp_path / "b", seed=1)
    (other / "ann").mkdir()
    ann.rename(other / "ann" / "h")
    code, lines = verify(capsys, other / "ann" / "h")
    assert code == 2 and "ann.json: not an ANN of" in lines[0] and "checksums differ" in lines[0]


def test_model_evaluation_and_token_folders(tmp_path, capsys, tiny_encoder, token_folder):
    model = tiny_encoder.save(tmp_path / "model")
    run = tmp_path / "run"
    from contriever.io import atomic_files

    with atomic_files(run) as staging:
        write_json(staging / "metrics.json", {"ndcg@10": 0.5})
        (staging / "run.trec").write_text("q1 Q0 d1 1 0.5 x\n")
    code, lines = verify(capsys, model, run, token_folder)
    assert code == 0 and len(lines) == 3 and all(" folder good: " in line for line in lines), lines
    weights = model / "model.safetensors"
    flip_bit(weights)
    (run / "run.trec").write_text("q1 Q0 d2 1 0.5 x\n")  # same size, another document
    code, lines = verify(capsys, model, run)
    assert code == 2
    assert lines[0].startswith(f"{weights}: contents changed")
    assert any(line.startswith(f"{run / 'run.trec'}: contents changed") for line in lines)


def test_a_folder_that_is_not_ours_and_a_missing_one_exit_2(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("hello")
    code, lines = verify(capsys, tmp_path / "mine", tmp_path / "absent")
    assert code == 2
    assert "not a folder contriever wrote" in lines[0]
    assert any(f"{tmp_path / 'absent'}: no such folder" in line for line in lines)


def test_folders_written_before_checksums_verify_by_size_and_say_so(tmp_path, capsys):
    folder = make_index(tmp_path / "idx")
    manifest = json.loads((folder / "index.json").read_text())
    for entry in manifest["shards"]:
        del entry["ids_checksum"], entry["vectors_checksum"]
    (folder / "index.json").write_text(json.dumps(manifest))
    code, lines = verify(capsys, folder)
    assert code == 0 and any("written before checksums" in line for line in lines)
    (folder / "ids-00000.txt").write_text("x\n")
    code, lines = verify(capsys, folder)
    assert code == 2 and "ids-00000.txt: is 2 bytes" in lines[0]
