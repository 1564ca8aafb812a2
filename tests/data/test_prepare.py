"""prepare(): raw jsonl / txt (gzip too) to a memory-mapped token stream, exactly the tokenizer's ids."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from contriever.data.prepare import DocumentSettings, TokenDataset, prepare
from contriever.errors import DataError

DOCS = [
    {"id": "a", "title": "Alpha", "text": "Dense retrieval learns vectors for queries and documents."},
    {"id": "b", "title": "Beta", "text": "   "},  # empty: skipped and counted
    {"id": "c", "title": "", "text": "Contrastive learning needs no labels, only pairs cut from text."},
    {
        "id": "d",
        "title": "Delta",
        "text": "Ünïcode, numbers 12345 and punctuation!? survive.\nA second paragraph.",
    },
]


@pytest.fixture(scope="module")
def tokenizer_path() -> Path:
    from contriever.model.encoder import default_model_path

    try:
        return default_model_path()
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_path))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def direct(hf_tokenizer, texts: list[str]) -> list[list[int]]:
    return [hf_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_round_trip_jsonl_gzip_and_txt(tmp_path, tokenizer_path, hf_tokenizer):
    jsonl = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    gz = write_jsonl(tmp_path / "docs.jsonl.gz", DOCS[::-1])
    txt = tmp_path / "lines.txt"
    txt.write_text("first line of text\n\nsecond line\n")
    out = prepare([jsonl, gz, txt], tokenizer_path, tmp_path / "prepared", workers=1, show_progress=False)

    non_empty = [d["text"] for d in DOCS if d["text"].strip()]
    expected = direct(hf_tokenizer, non_empty + non_empty[::-1] + ["first line of text", "second line"])
    data = TokenDataset(out)
    assert data.dtype == np.uint16  # BERT's 30,522 ids fit
    assert data.n_docs == len(expected) == 8
    assert [data.document(i).tolist() for i in range(data.n_docs)] == expected
    assert data.offsets.tolist() == np.concatenate([[0], np.cumsum([len(e) for e in expected])]).tolist()
    assert data.n_tokens == sum(map(len, expected))

    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped_empty"] == 3  # one blank text in each jsonl file, one blank line in the txt
    assert [i["docs"] for i in meta["inputs"]] == [3, 3, 2]
    assert meta["tokenizer"]["vocab_size"] == 30522
    assert meta["tokenizer"]["special_ids"] == {
        "cls": 101, "sep": 102, "pad": 0, "mask": 103, "bos": None, "eos": None, "unk": 100
    }  # fmt: skip
    assert meta["dtype"] == "uint16" and meta["n_tokens"] == data.n_tokens
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_worker_pool_gives_the_same_stream_in_order(tmp_path, tokenizer_path):
    rows = [{"text": f"document number {i} " + "word " * (i % 17)} for i in range(300)]
    source = write_jsonl(tmp_path / "many.jsonl", rows)
    one = TokenDataset(prepare([source], tokenizer_path, tmp_path / "one", workers=1, show_progress=False))
    two = TokenDataset(
        prepare([source], tokenizer_path, tmp_path / "two", workers=2, batch_docs=7, show_progress=False)
    )
    assert np.array_equal(one.tokens, two.tokens)
    assert np.array_equal(one.offsets, two.offsets)
    assert one.n_docs == 300


def test_long_documents_are_not_truncated(tmp_path, tokenizer_path, hf_tokenizer):
    text = " ".join(f"word{i}" for i in range(2000))
    out = prepare(
        [write_jsonl(tmp_path / "long.jsonl", [{"text": text}])], tokenizer_path, tmp_path / "p", workers=1
    )
    assert TokenDataset(out).document(0).tolist() == direct(hf_tokenizer, [text])[0]
    assert TokenDataset(out).n_tokens > 2000


def test_include_title_joins_title_and_text(tmp_path, tokenizer_path, hf_tokenizer):
    beir = [
        {"_id": "1", "title": "A Title", "text": "the body"},
        {"_id": "2", "title": "", "text": "untitled"},
    ]
    source = write_jsonl(tmp_path / "corpus.jsonl", beir)
    out = prepare(
        [source],
        tokenizer_path,
        tmp_path / "p",
        documents=DocumentSettings(include_title=True),
        workers=1,
        show_progress=False,
    )
    data = TokenDataset(out)
    assert [data.document(i).tolist() for i in range(2)] == direct(
        hf_tokenizer, ["A Title the body", "untitled"]
    )


def test_custom_text_field(tmp_path, tokenizer_path, hf_tokenizer):
    source = write_jsonl(tmp_path / "c.jsonl", [{"contents": "some passage"}])
    out = prepare(
        [source],
        tokenizer_path,
        tmp_path / "p",
        documents=DocumentSettings(text_field="contents"),
        workers=1,
        show_progress=False,
    )
    assert TokenDataset(out).document(0).tolist() == direct(hf_tokenizer, ["some passage"])[0]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.bad_input
def test_bad_json_line_names_file_and_line(tmp_path, tokenizer_path, workers):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": broken\n{"text": "never read"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON") as error:
        prepare(
            [source], tokenizer_path, tmp_path / "out", workers=workers, batch_docs=2, show_progress=False
        )
    assert error.value.line == 3 and error.value.path == str(source)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.jsonl"]  # the staging folder is gone


@pytest.mark.bad_input
def test_missing_text_field_and_wrong_types(tmp_path, tokenizer_path):
    source = write_jsonl(tmp_path / "x.jsonl", [{"text": "ok"}, {"body": "no text field"}])
    with pytest.raises(DataError, match=r"x\.jsonl:2: no 'text' field \(fields: 'body'\)"):
        prepare([source], tokenizer_path, tmp_path / "out", workers=1, show_progress=False)
    source = write_jsonl(tmp_path / "y.jsonl", [{"text": 5}])
    with pytest.raises(DataError, match=r"y\.jsonl:1: field 'text' is a int"):
        prepare([source], tokenizer_path, tmp_path / "out", workers=1, show_progress=False)
    source = tmp_path / "z.jsonl"
    source.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"z\.jsonl:1: expected a JSON object"):
        prepare([source], tokenizer_path, tmp_path / "out", workers=1, show_progress=False)


@pytest.mark.bad_input
def test_unknown_format_and_empty_corpus(tmp_path, tokenizer_path):
    other = tmp_path / "data.csv"
    other.write_text("a,b\n")
    with pytest.raises(DataError, match="unknown input format"):
        prepare([other], tokenizer_path, tmp_path / "out")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="no non-empty documents"):
        prepare([empty], tokenizer_path, tmp_path / "out", workers=1, show_progress=False)


@pytest.mark.bad_input
def test_replaces_a_prepared_folder_but_nothing_else(tmp_path, tokenizer_path):
    first = tmp_path / "first.txt"
    first.write_text("one document\n")
    second = tmp_path / "second.txt"
    second.write_text("another document\nand a third\n")
    out = tmp_path / "prepared"
    prepare([first], tokenizer_path, out, workers=1, show_progress=False)
    prepare([second], tokenizer_path, out, workers=1, show_progress=False)
    assert TokenDataset(out).n_docs == 2
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.md").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a prepared token folder"):
        prepare([first], tokenizer_path, precious, workers=1, show_progress=False)
    assert (precious / "notes.md").read_text() == "keep me"


@pytest.mark.bad_input
def test_token_dataset_checks_its_files(tmp_path, tokenizer_path):
    source = tmp_path / "t.txt"
    source.write_text("some words here\nmore words\n")
    out = prepare([source], tokenizer_path, tmp_path / "p", workers=1, show_progress=False)
    data = TokenDataset(out)
    assert len(data) == 2 and data.document(-1).tolist() == data.document(1).tolist()
    with pytest.raises(IndexError):
        data.document(2)
    assert data.doc_lengths().sum() == data.n_tokens
    with open(out / "tokens.bin", "ab") as handle:
        handle.write(b"\0\0")
    with pytest.raises(DataError, match="tokens.bin"):
        TokenDataset(out)
    with pytest.raises(FileNotFoundError, match="not a prepared token folder"):
        TokenDataset(tmp_path)


@pytest.mark.bad_input
def test_preparing_over_an_older_folder_keeps_the_users_other_files(tmp_path, tokenizer_path):
    source = tmp_path / "t.txt"
    source.write_text("one document\n")
    out = prepare([source], tokenizer_path, tmp_path / "prepared", workers=1, show_progress=False)
    (out / "NOTES.md").write_text("how I made this")
    (out / "extra").mkdir()
    source.write_text("first document\nsecond document\n")
    prepare([source], tokenizer_path, out, workers=1, show_progress=False)
    assert TokenDataset(out).n_docs == 2
    assert (out / "NOTES.md").read_text() == "how I made this" and (out / "extra").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared", "t.txt"]  # no staging left over


@pytest.mark.bad_input
def test_a_byte_order_mark_and_bad_bytes_in_prepare_inputs(tmp_path, tokenizer_path, hf_tokenizer):
    source = tmp_path / "bom.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "hello world"}).encode() + b"\n")
    data = TokenDataset(prepare([source], tokenizer_path, tmp_path / "p", workers=1, show_progress=False))
    assert data.document(0).tolist() == direct(hf_tokenizer, ["hello world"])[0]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"".join(b"x" * 3000 + b"\n" for _ in range(6)) + b"caf\xe9\n")
    with pytest.raises(DataError) as error:
        prepare([bad], tokenizer_path, tmp_path / "q", workers=1, show_progress=False)
    assert error.value.line == 7 and "not UTF-8" in error.value.message
