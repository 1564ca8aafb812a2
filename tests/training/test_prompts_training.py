"""Prompts in training: the config keys (model.query_prompt / passage_prompt / force_prompts), the
fine-tuning batches (text prompts) and the pretraining views (prompt token ids after the first token)."""

from __future__ import annotations

import numpy as np
import pytest

from contriever.errors import UsageError
from contriever.model.encoder import Encoder
from contriever.training.batches import PretrainBatches, with_prompt
from contriever.training.config import load_config
from contriever.training.trainer import build_encoder

E5 = {"query": "query: ", "passage": "passage: "}


@pytest.fixture(scope="module")
def prompted_model(tiny_encoder, tmp_path_factory):
    encoder = Encoder(tiny_encoder.model, tiny_encoder.tokenizer, prompts=E5)
    return encoder.save(tmp_path_factory.mktemp("prompted") / "model")


def test_with_prompt_goes_after_the_first_special_token():
    view = np.array([101, 7, 8, 102])
    assert with_prompt(view, [5, 6], 101).tolist() == [101, 5, 6, 7, 8, 102]
    assert with_prompt(view, [5, 6], None).tolist() == [5, 6, 101, 7, 8, 102]
    assert with_prompt(view, [], 101).tolist() == view.tolist()


def test_training_keeps_the_model_prompts_and_config_keys_change_them(prompted_model):
    keep = build_encoder(load_config(None, [f'model.path="{prompted_model}"']))
    assert keep.prompts == E5
    with pytest.raises(UsageError, match=r"records the query prompt 'query: '; refusing 'q: '"):
        build_encoder(load_config(None, [f'model.path="{prompted_model}"', 'model.query_prompt="q: "']))
    forced = build_encoder(
        load_config(
            None,
            [f'model.path="{prompted_model}"', 'model.query_prompt="q: "', "model.force_prompts=true"],
        )
    )
    assert forced.prompts == {"query": "q: ", "passage": "passage: "}
    with pytest.raises(UsageError, match="refusing ''"):  # dropping a recorded prompt is another prompt too
        build_encoder(load_config(None, [f'model.path="{prompted_model}"', 'model.passage_prompt=""']))


def test_pretraining_views_carry_the_prompt_ids(token_folder, prompted_model):
    encoder = Encoder.load(prompted_model)
    ids = encoder.prompt_token_ids()
    assert ids["query"] == encoder.tokenizer("query:", add_special_tokens=False)["input_ids"]
    config = load_config(None, [f'data.folders=["{token_folder}"]', "data.chunk_length=32"])
    plain = PretrainBatches(config, encoder.tokenizer, local_batch=3, rank=0, world_size=1).next_batch()
    prompted = PretrainBatches(
        config, encoder.tokenizer, local_batch=3, rank=0, world_size=1, prompt_ids=ids
    ).next_batch()
    cls = encoder.tokenizer.cls_token_id
    for side, name in (("q", "query"), ("k", "passage")):
        n = len(ids[name])
        for row, plain_row, length in zip(
            prompted[f"{side}_ids"], plain[f"{side}_ids"], plain[f"{side}_mask"].sum(1)
        ):
            assert row[0] == cls and row[1 : 1 + n].tolist() == ids[name]
            assert row[1 + n : length + n].tolist() == plain_row[1:length].tolist()  # the same view after it
