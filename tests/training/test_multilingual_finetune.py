"""Few-shot fine-tuning with a multilingual model as init: `contriever finetune --config FILE`.

The model is a tiny random BERT with an XLM-R-shaped vocabulary (70,000 ids, XLM-R's special ids;
tests/xlmr_shaped.py) saved as a model folder, standing in for multilingual-e5-small (no 90 MB weights
in tests). Queries in German, Russian, Chinese and Arabic, documents in English, as in XQuAD and
debian-xling.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from contriever.cli.main import main
from contriever.model.encoder import Encoder
from tests.xlmr_shaped import TEXTS, VOCAB_SIZE, write_xlmr_shaped_tokenizer


def write_multilingual_beir(folder: Path, write_beir) -> Path:
    """English documents; each is the answer of one query in each other language (train and test)."""
    corpus, queries, qrels = {}, {}, {"train": [], "test": []}
    english = TEXTS["en"]
    for d, text in enumerate(english * 4):
        corpus[f"d{d}"] = ("", f"{text} {'npm' if d % 2 else 'warfare'}")
    for lang, texts in TEXTS.items():
        if lang == "en":
            continue
        for d in range(len(corpus)):
            qid = f"{lang}-{d}"
            queries[qid] = texts[d % len(texts)]
            qrels["train" if d < 6 else "test"].append((qid, f"d{d}", 1))
    return write_beir(folder, corpus, queries, qrels)


def test_finetune_config_with_a_multilingual_model_as_init(tmp_path, write_beir):
    tokenizer = write_xlmr_shaped_tokenizer(tmp_path / "tokenizer")
    init = Encoder.from_scratch(
        tokenizer,
        pooling="mean",
        normalize=True,
        max_length=32,
        seed=0,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    ).save(tmp_path / "multilingual-init")
    data = write_multilingual_beir(tmp_path / "beir", write_beir)
    config = tmp_path / "fewshot.toml"
    config.write_text(
        f"""task = "finetune"
[model]
path = "{init}"
[finetune]
train = "{data}"
dev_fraction = 0.25
query_max_length = 16
doc_max_length = 16
n_negatives = 1
[loss]
kind = "inbatch"
[optim]
lr = 1e-3
warmup_steps = 0
[train]
steps = 4
batch_size = 4
log_every = 1
eval_every = 2
precision = "fp32"
[eval]
max_length = 16
"""
    )
    output = tmp_path / "run"
    assert main(["finetune", "--config", str(config), "--rounds", "1", "--output", str(output)]) == 0

    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "eval/ndcg@10" in r] == [2, 4]  # dev retrieval ran
    tuned = Encoder.load(output / "best")
    assert tuned.model.config.vocab_size == VOCAB_SIZE
    assert tuned.tokenizer.cls_token_id == 0 and tuned.tokenizer.sep_token_id == 2  # XLM-R's ids kept
    before = Encoder.load(init).encode(["Менеджер пакетов"], show_progress=False)
    after = tuned.encode(["Менеджер пакетов"], show_progress=False)
    assert after.shape == (1, 16) and np.isfinite(after).all()
    assert not np.allclose(before, after)  # the weights moved
