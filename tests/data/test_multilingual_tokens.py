"""Mixed-language token folders with a vocabulary too large for uint16 (XLM-R's 250,002 pieces).

A tiny XLM-R-shaped tokenizer (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask> last; 70,000 entries) puts every
word of the test texts above id 65,535, so a uint16 folder would corrupt them: `prepare` must write
uint32, and the ids must come back unchanged through the memory map, the chunk sampler (one source per
language, mixed by the exponent), the pair views and a short pretraining run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contriever.data.augment import PairSettings, make_pair, special_ids_from_tokenizer
from contriever.data.prepare import TokenDataset, prepare
from contriever.data.sampling import ChunkSampler, ChunkSettings
from tests.xlmr_shaped import TEXTS, VOCAB_SIZE, language_of, write_xlmr_shaped_tokenizer


@pytest.fixture(scope="module")
def xlmr_shaped_tokenizer(tmp_path_factory) -> Path:
    return write_xlmr_shaped_tokenizer(tmp_path_factory.mktemp("xlmr-shaped-tokenizer"))


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"_id": str(i), "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)
        )
    )
    return path


def test_a_mixed_language_file_becomes_a_uint32_folder_with_every_id_intact(xlmr_shaped_tokenizer, tmp_path):
    from contriever.model.locate import load_tokenizer

    texts = [t for lang in TEXTS for t in TEXTS[lang]]
    folder = prepare(
        write_jsonl(tmp_path / "mixed.jsonl", texts),
        xlmr_shaped_tokenizer,
        tmp_path / "mixed",
        workers=1,
        show_progress=False,
    )
    dataset = TokenDataset(folder)
    assert dataset.meta["dtype"] == "uint32" and dataset.dtype == np.uint32
    assert dataset.vocab_size == VOCAB_SIZE
    assert (folder / "tokens.bin").stat().st_size == 4 * dataset.n_tokens
    tokenizer = load_tokenizer(xlmr_shaped_tokenizer)
    assert len(dataset) == len(texts)
    for i, text in enumerate(texts):
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert dataset.document(i).tolist() == expected
        assert min(expected) > np.iinfo(np.uint16).max  # would not survive uint16
        assert {language_of(t) for t in expected} == {next(lang for lang in TEXTS if text in TEXTS[lang])}
    dataset.check_tokenizer(tokenizer)  # the folder's recorded tokenizer is the one we read with


def test_one_folder_per_language_sampled_by_the_mix_exponent_into_wrapped_views(
    xlmr_shaped_tokenizer, tmp_path
):
    from contriever.model.locate import load_tokenizer

    folders = [
        prepare(
            write_jsonl(tmp_path / f"{lang}.jsonl", texts * 20),  # 40 documents a language
            xlmr_shaped_tokenizer,
            tmp_path / f"tok-{lang}",
            workers=1,
            show_progress=False,
        )
        for lang, texts in TEXTS.items()
    ]
    sampler = ChunkSampler(
        folders, ChunkSettings(4, within_documents=True, mix_exponent=0.0, min_doc_length=2), seed=3
    )
    chunks = sampler.sample(2_000)
    shares = {lang: 0 for lang in TEXTS}
    for chunk in chunks:
        assert int(chunk.min()) > np.iinfo(np.uint16).max  # read back from uint32 unchanged
        languages = {language_of(int(t)) for t in chunk}
        assert len(languages) == 1 and None not in languages  # a chunk stays inside one document
        shares[languages.pop()] += 1
    # mix_exponent 0: every language the same share (400 of 2,000 each, binomial noise ~18)
    assert all(320 < count < 480 for count in shares.values()), shares

    tokenizer = load_tokenizer(xlmr_shaped_tokenizer)
    ids = special_ids_from_tokenizer(tokenizer)
    assert (ids["bos_id"], ids["eos_id"]) == (0, 2)
    settings = PairSettings(method="crop", ratio_min=0.5, ratio_max=1.0, vocab_size=len(tokenizer), **ids)
    rng = np.random.default_rng(0)
    for chunk in chunks[:50]:
        query, key = make_pair(chunk, rng, settings)
        for view in (query, key):
            assert view[0] == 0 and view[-1] == 2
            assert set(view[1:-1].tolist()) <= set(chunk.tolist())  # ids above 65,535 kept as they were


def test_pretraining_runs_on_per_language_uint32_folders(xlmr_shaped_tokenizer, tmp_path):
    """Two MoCo updates of a tiny random BERT with the 70,000-id vocabulary over five language folders."""
    from contriever.model.encoder import Encoder
    from contriever.training.config import load_config
    from contriever.training.trainer import train

    folders = [
        prepare(
            write_jsonl(tmp_path / f"{lang}.jsonl", texts * 10),
            xlmr_shaped_tokenizer,
            tmp_path / f"tok-{lang}",
            workers=1,
            show_progress=False,
        )
        for lang, texts in TEXTS.items()
    ]
    config = load_config(
        None,
        [
            "task=pretrain",
            "model.init=scratch",
            f"model.path={xlmr_shaped_tokenizer}",
            "model.hidden_size=16",
            "model.num_hidden_layers=1",
            "model.num_attention_heads=2",
            "model.intermediate_size=32",
            "model.max_length=16",
            f"data.folders={json.dumps([str(f) for f in folders])}",
            "data.chunk_length=8",
            "data.within_documents=true",
            "data.min_doc_length=2",
            "data.mix_exponent=0.5",
            "loss.queue_size=16",
            "loss.momentum=0.99",
            "optim.warmup_steps=1",
            "train.steps=2",
            "train.batch_size=4",
            "train.log_every=1",
            "train.precision=fp32",
        ],
    )
    final = train(config, tmp_path / "run")
    encoder = Encoder.load(final)
    assert encoder.model.config.vocab_size == VOCAB_SIZE
    vectors = encoder.encode(["Менеджер пакетов", "软件 包 管理器"], show_progress=False)
    assert vectors.shape == (2, 16) and np.isfinite(vectors).all()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
