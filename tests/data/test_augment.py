"""Positive pairs: crop and ICT follow their settings, each augmentation does what it says, wrapping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contriever.data.augment import (
    PairSettings,
    apply_augmentation,
    inverse_cloze,
    make_pair,
    random_crop,
    special_ids_from_tokenizer,
    wrap_special_tokens,
)

CHUNK = np.arange(1000, 1256, dtype=np.int64)  # 256 distinct ids: a view's ids tell its positions
BERT = {
    "bos_id": 101,
    "eos_id": 102,
    "mask_id": 103,
    "vocab_size": 30522,
    "special_ids": (0, 100, 101, 102, 103),
}


def is_slice(view: np.ndarray, chunk: np.ndarray = CHUNK) -> bool:
    start = int(view[0] - chunk[0])
    return np.array_equal(view, chunk[start : start + len(view)])


def test_crop_lengths_follow_the_ratio_settings():
    rng = np.random.default_rng(0)
    ratio_min, ratio_max, n = 0.1, 0.5, len(CHUNK)
    lengths = []
    for _ in range(5000):
        view = random_crop(CHUNK, rng, ratio_min, ratio_max)
        assert is_slice(view)
        lengths.append(len(view))
    lengths = np.array(lengths)
    assert lengths.min() >= math.floor(ratio_min * n) and lengths.max() <= math.floor(ratio_max * n)
    assert abs(lengths.mean() - ((ratio_min + ratio_max) / 2 * n - 0.5)) < 1.5  # floor(r * n), r uniform
    assert lengths.min() < math.floor(ratio_min * n) + 3 and lengths.max() > math.floor(ratio_max * n) - 3


def test_crop_views_are_independent_and_never_empty():
    rng = np.random.default_rng(1)
    settings = PairSettings(method="crop", augmentation="none", ratio_min=0.2, ratio_max=0.4)
    overlaps, starts = 0, set()
    for _ in range(500):
        q, k = make_pair(CHUNK, rng, settings)
        overlaps += len(set(q.tolist()) & set(k.tolist())) > 0
        starts.add((int(q[0]), int(k[0])))
    assert 0 < overlaps < 500  # views may overlap, and often do not
    assert len(starts) > 400
    assert len(random_crop(np.array([7, 8, 9]), rng, 0.05, 0.1)) == 1  # at least one token


def test_ict_span_is_removed_from_the_key_except_about_ten_percent_of_the_time():
    rng = np.random.default_rng(2)
    kept, trials = 0, 5000
    for _ in range(trials):
        query, key = inverse_cloze(CHUNK, rng, ratio_min=0.1, ratio_max=0.3, keep_span_prob=0.1)
        assert is_slice(query) and math.floor(0.1 * 256) <= len(query) <= math.floor(0.3 * 256)
        start = int(query[0] - CHUNK[0])
        if np.array_equal(key, CHUNK):
            kept += 1
        else:
            expected = np.concatenate([CHUNK[:start], CHUNK[start + len(query) :]])
            assert np.array_equal(key, expected)  # prefix + suffix, in order
            assert not set(query.tolist()) & set(key.tolist())
    assert abs(kept / trials - 0.1) < 0.02  # binomial sd 0.004


def test_ict_never_returns_an_empty_key():
    rng = np.random.default_rng(3)
    for _ in range(50):
        query, key = inverse_cloze(np.array([5]), rng, 0.5, 1.0, keep_span_prob=0.0)
        assert query.tolist() == [5] and key.tolist() == [5]


def test_delete_removes_about_p_and_keeps_order():
    rng = np.random.default_rng(4)
    tokens = np.arange(20000)
    out = apply_augmentation(tokens, "delete", 0.1, rng)
    assert abs(1 - len(out) / len(tokens) - 0.1) < 0.01
    assert np.all(np.diff(out) > 0)  # a subsequence: order kept
    assert len(apply_augmentation(np.arange(5), "delete", 1.0, rng)) == 1  # never empty


def test_mask_inserts_mask_ids_at_about_p():
    rng = np.random.default_rng(5)
    tokens = np.arange(2000, 22000)
    out = apply_augmentation(tokens, "mask", 0.2, rng, mask_id=103)
    changed = out != tokens
    assert np.all(out[changed] == 103)
    assert abs(changed.mean() - 0.2) < 0.015
    with pytest.raises(ValueError, match="mask id"):
        apply_augmentation(tokens, "mask", 0.2, rng, mask_id=None)


def test_replace_never_produces_special_ids():
    rng = np.random.default_rng(6)
    tokens = np.full(5000, 7)
    out = apply_augmentation(tokens, "replace", 1.0, rng, vocab_size=20, special_ids=(0, 1, 2, 19))
    assert set(out.tolist()) == set(range(3, 19))  # every allowed id, nothing else
    out = apply_augmentation(
        np.arange(2000, 22000), "replace", 0.1, rng, vocab_size=30522, special_ids=BERT["special_ids"]
    )
    changed = out != np.arange(2000, 22000)
    assert abs(changed.mean() - 0.1) < 0.01
    assert not np.isin(out, BERT["special_ids"]).any()


def test_shuffle_keeps_the_multiset_and_moves_about_p():
    rng = np.random.default_rng(7)
    tokens = np.arange(10000)
    out = apply_augmentation(tokens, "shuffle", 0.1, rng)
    assert sorted(out.tolist()) == tokens.tolist()
    assert 0.08 < (out != tokens).mean() <= 0.1 + 0.01  # only selected positions move
    full = apply_augmentation(tokens, "shuffle", 1.0, rng)
    assert sorted(full.tolist()) == tokens.tolist() and (full != tokens).mean() > 0.99
    assert np.array_equal(apply_augmentation(tokens, "shuffle", 0.0, rng), tokens)


def test_none_and_unknown():
    rng = np.random.default_rng(8)
    assert np.array_equal(apply_augmentation(CHUNK, "none", 0.5, rng), CHUNK)
    with pytest.raises(ValueError, match="unknown augmentation"):
        apply_augmentation(CHUNK, "rotate", 0.1, rng)


def test_wrap_with_a_bert_tokenizer():
    from transformers import AutoTokenizer

    from contriever.model.encoder import default_model_path

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    except FileNotFoundError as error:
        pytest.skip(str(error))
    ids = special_ids_from_tokenizer(tokenizer)
    assert (ids["bos_id"], ids["eos_id"], ids["mask_id"]) == (101, 102, 103)  # [CLS], [SEP], [MASK]
    assert set(ids["special_ids"]) == {0, 100, 101, 102, 103}
    text = "Unsupervised dense retrieval"
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    wrapped = wrap_special_tokens(np.array(plain), ids["bos_id"], ids["eos_id"])
    assert wrapped.tolist() == tokenizer(text)["input_ids"]  # what the tokenizer itself would add


XLMR_WORDS = ["dense", "retrieval", "with", "contrastive", "learning", "hello", "world"]


XLMR_SPECIAL_TOKENS = dict(
    bos_token="<s>",
    eos_token="</s>",
    cls_token="<s>",
    sep_token="</s>",
    pad_token="<pad>",
    unk_token="<unk>",
    mask_token="<mask>",
)


def tiny_xlmr_tokenizer():
    """An XLM-R-style tokenizer built here: SentencePiece-like Unigram, <s> $A </s>, pad id 1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"\u2581{w}", -2.0) for w in XLMR_WORDS] + [
        (c, -8.0) for c in "\u2581abcdefghijklmnopqrstuvwxyz"
    ]
    pieces += [("<mask>", 0.0)]
    backend = Tokenizer(models.Unigram(pieces, unk_id=3))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return XLMRobertaTokenizerFast(
        tokenizer_object=backend,
        **XLMR_SPECIAL_TOKENS,
    )


def test_views_follow_an_xlmr_tokenizer():
    tokenizer = tiny_xlmr_tokenizer()
    mask = len(tokenizer) - 1
    ids = special_ids_from_tokenizer(tokenizer)
    assert (ids["bos_id"], ids["eos_id"], ids["mask_id"]) == (0, 2, mask)  # <s>, </s>, <mask>
    assert set(ids["special_ids"]) == {0, 1, 2, 3, mask}
    text = "dense retrieval with contrastive learning"
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert 3 not in plain and len(plain) == 5  # whole-word pieces, no <unk>
    wrapped = wrap_special_tokens(np.array(plain), ids["bos_id"], ids["eos_id"])
    assert wrapped.tolist() == tokenizer(text)["input_ids"] == [0, *plain, 2]
    settings = PairSettings(augmentation="none", vocab_size=len(tokenizer), **ids)
    query, key = make_pair(np.array(plain * 4), np.random.default_rng(0), settings)
    for view in (query, key):
        assert view[0] == 0 and view[-1] == 2 and not {0, 2} & set(view[1:-1].tolist())


def test_an_xlmr_encoder_end_to_end():
    """A tiny random XLM-R model with that tokenizer: training views and encoded texts agree."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from contriever.model.encoder import Encoder

    tokenizer = tiny_xlmr_tokenizer()
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    encoder = Encoder(XLMRobertaModel(config, add_pooling_layer=False), tokenizer, max_length=32)
    (sequence,) = encoder.tokenize(["hello world"])
    assert sequence[0] == 0 and sequence[-1] == 2
    ids, mask = encoder.collate([sequence, sequence[:2]])
    assert ids[1, 2:].tolist() == [1] * (len(sequence) - 2)  # padded with <pad> (id 1)
    vectors = encoder.encode(["hello world", "dense retrieval"], show_progress=False)
    assert vectors.shape == (2, 16) and np.isfinite(vectors).all()


def test_a_tokenizer_that_adds_nothing_gets_bare_views():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "hello": 5, "world": 6}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # no post-processor: encodes without specials
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **XLMR_SPECIAL_TOKENS,
    )
    assert tokenizer("hello world")["input_ids"] == [5, 6]
    ids = special_ids_from_tokenizer(tokenizer)
    assert (ids["bos_id"], ids["eos_id"], ids["mask_id"]) == (None, None, 4)  # as it encodes at evaluation
    assert wrap_special_tokens(np.array([5]), None, 2).tolist() == [5, 2]


def test_make_pair_wraps_and_respects_settings():
    rng = np.random.default_rng(9)
    settings = PairSettings(method="crop", ratio_min=0.1, ratio_max=0.5, augmentation="none", **BERT)
    for _ in range(100):
        q, k = make_pair(CHUNK, rng, settings)
        for view in (q, k):
            assert view[0] == 101 and view[-1] == 102 and view.dtype == np.int64
            assert is_slice(view[1:-1]) and 25 <= len(view) - 2 <= 128
    ict = PairSettings(method="ict", augmentation="delete", augmentation_prob=0.1, **BERT)
    q, k = make_pair(CHUNK, rng, ict)
    assert q[0] == k[0] == 101 and q[-1] == k[-1] == 102
    short = PairSettings(method="crop", ratio_min=0.9, ratio_max=1.0, max_view_length=16, **BERT)
    q, k = make_pair(CHUNK, rng, short)
    assert len(q) == len(k) == 16 and q[-1] == 102


def test_make_pair_is_a_function_of_the_generator_state():
    settings = PairSettings(augmentation="replace", augmentation_prob=0.3, **BERT)
    a = [make_pair(CHUNK, np.random.default_rng(10), settings) for _ in range(2)]
    assert all(np.array_equal(x, y) for x, y in zip(a[0], a[1]))


def test_pair_settings_are_checked():
    with pytest.raises(ValueError, match="method"):
        PairSettings(method="mlm")
    with pytest.raises(ValueError, match="augmentation"):
        PairSettings(augmentation="rotate")
    with pytest.raises(ValueError, match="ratio"):
        PairSettings(ratio_min=0.6, ratio_max=0.5)
    with pytest.raises(ValueError, match="mask_id"):
        PairSettings(augmentation="mask")
    with pytest.raises(ValueError, match="vocab_size"):
        PairSettings(augmentation="replace")
