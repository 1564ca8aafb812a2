"""The pretraining batch source: two views of each chunk, padded, framed by special tokens, resumable."""

from __future__ import annotations

import pytest
import torch

from contriever.training.batches import PretrainBatches
from contriever.training.config import load_config


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from contriever.model.encoder import default_model_path

    return AutoTokenizer.from_pretrained(str(default_model_path()))


def pretrain_batches(token_folder, tokenizer, rank: int = 0, world_size: int = 1) -> PretrainBatches:
    config = load_config(None, [f'data.folders=["{token_folder}"]', "data.chunk_length=32"])
    return PretrainBatches(config, tokenizer, local_batch=4, rank=rank, world_size=world_size)


def test_next_batch_gives_padded_views_framed_by_special_tokens(token_folder, tokenizer):
    batch = pretrain_batches(token_folder, tokenizer).next_batch()
    assert set(batch) == {"q_ids", "q_mask", "k_ids", "k_mask"}
    for side in ("q", "k"):
        ids, mask = batch[f"{side}_ids"], batch[f"{side}_mask"]
        assert ids.shape[0] == 4 and ids.shape == mask.shape and ids.dtype == mask.dtype == torch.int64
        lengths = mask.sum(1)
        assert int(lengths.max()) == ids.shape[1]  # padded to the longest view, no further
        assert int(lengths.min()) > 2 and int(lengths.max()) <= 32 + 2  # a crop of a 32-token chunk + CLS/SEP
        for row, length in zip(ids, lengths.tolist()):
            assert row[0] == tokenizer.cls_token_id and row[length - 1] == tokenizer.sep_token_id
            assert (row[length:] == tokenizer.pad_token_id).all() and tokenizer.pad_token_id not in row[
                :length
            ]


def test_state_dict_resumes_the_same_batches(token_folder, tokenizer):
    source = pretrain_batches(token_folder, tokenizer)
    source.next_batch()
    state = source.state_dict()
    expected = [source.next_batch() for _ in range(2)]
    resumed = pretrain_batches(token_folder, tokenizer)
    resumed.load_state_dict(state)
    for want in expected:
        got = resumed.next_batch()
        assert all(torch.equal(got[key], want[key]) for key in want)


def test_each_process_draws_its_own_batches(token_folder, tokenizer):
    first = pretrain_batches(token_folder, tokenizer, rank=0, world_size=2).next_batch()
    second = pretrain_batches(token_folder, tokenizer, rank=1, world_size=2).next_batch()
    assert not torch.equal(first["q_ids"][:, :8], second["q_ids"][:, :8])
