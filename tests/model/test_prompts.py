"""Per-model prompts (sentence-transformers' `prompts`, E5's `query: ` / `passage: `) end to end:
saved and loaded with the model, put before queries and passages, recorded in index folders (a resume
with other prompts is refused), part of the encode-cache key, applied to queries of a built index."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contriever.data.passages import PassageSettings
from contriever.errors import ConfigError, UsageError
from contriever.model.encoder import Encoder
from contriever.model.text_options import TextOptions
from contriever.retrieval.encode import build_index, cache_folder, encoding_settings, settings_key
from contriever.retrieval.shards import open_index

E5 = {"query": "query: ", "passage": "passage: "}


@pytest.fixture(scope="module")
def prompted_model(tiny_encoder, tmp_path_factory):
    encoder = Encoder(tiny_encoder.model, tiny_encoder.tokenizer, prompts=E5)
    return encoder.save(tmp_path_factory.mktemp("prompted") / "model")


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [{"_id": f"d{i}", "title": "", "text": f"document number {i} about retrieval"} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompts_are_saved_loaded_and_overridden(prompted_model):
    settings = json.loads((prompted_model / "config_sentence_transformers.json").read_text())
    assert settings["prompts"] == E5
    encoder = Encoder.load(prompted_model)
    assert encoder.prompts == E5 and encoder.prompt("query") == "query: "
    forced = Encoder.load(prompted_model, text=TextOptions(prompts={"query": "search: "}, force_prompts=True))
    assert forced.prompts == {**E5, "query": "search: "}
    assert Encoder.load(
        prompted_model, text=TextOptions(prompts={"passage": None}, force_prompts=True)
    ).prompts == {"query": "query: "}
    assert (
        Encoder.load(prompted_model, text=TextOptions(prompts={"query": "query: "})).prompts == E5
    )  # the same: no refusal


@pytest.mark.bad_input
def test_a_prompt_other_than_the_recorded_one_is_refused_unless_forced(prompted_model):
    with pytest.raises(UsageError, match=r"records the query prompt 'query: '; refusing 'search: '"):
        Encoder.load(prompted_model, text=TextOptions(prompts={"query": "search: "}))
    with pytest.raises(UsageError, match=r"records the passage prompt 'passage: '; refusing ''"):
        Encoder.load(prompted_model, text=TextOptions(prompts={"passage": ""}))


def test_prompts_go_before_queries_and_passages_only(prompted_model, tiny_encoder):
    encoder = Encoder.load(prompted_model)
    text = "dense retrieval"
    assert encoder.tokenize([text], prompt_name="query") == tiny_encoder.tokenize(["query: " + text])
    assert encoder.tokenize([text], prompt_name="passage") == tiny_encoder.tokenize(["passage: " + text])
    assert encoder.tokenize([text]) == tiny_encoder.tokenize([text])
    np.testing.assert_allclose(
        encoder.encode_queries([text], show_progress=False),
        tiny_encoder.encode(["query: " + text], show_progress=False),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        encoder.encode_corpus([{"title": "T", "text": text}], show_progress=False),
        tiny_encoder.encode(["passage: T " + text], show_progress=False),
        atol=1e-6,
    )


def test_a_document_prompt_serves_passages():
    encoder = Encoder.__new__(Encoder)
    encoder.prompts = {"document": "doc: "}
    assert encoder.prompt("passage") == "doc: " and encoder.prompt("query") == ""


def test_index_folder_records_prompts_and_refuses_others_on_resume(
    prompted_model, tiny_encoder, corpus, tmp_path
):
    encoder = Encoder.load(prompted_model)
    folder = tmp_path / "idx"
    kwargs = {"passages": PassageSettings(0), "shard_rows": 2, "use_cache": False, "show_progress": False}
    build_index([corpus], encoder, folder, part=(0, 2), model=str(prompted_model), **kwargs)
    other = Encoder.load(prompted_model, text=TextOptions(prompts={"passage": "text: "}, force_prompts=True))
    with pytest.raises(
        ConfigError, match=r"prompts: \{'query': 'query: ', 'passage': 'passage: '\} in the folder"
    ):
        build_index([corpus], other, folder, part=(1, 2), model=str(prompted_model), **kwargs)
    build_index([corpus], encoder, folder, part=(1, 2), model=str(prompted_model), **kwargs)
    index = open_index(folder)
    assert index.metadata["prompts"] == E5
    passages = index.passages(range(2))
    expected = tiny_encoder.encode([f"passage: {p['text']}" for p in passages], show_progress=False)
    np.testing.assert_allclose(np.asarray(index.vectors(0), dtype=np.float32), expected, atol=2e-3)

    from contriever.retrieval.retrieve import encoder_for_index

    searcher = encoder_for_index(index)
    assert searcher.prompt("query") == "query: "  # queries get the prompt the passages were indexed for


def test_an_index_without_prompts_keeps_queries_bare(tiny_model, corpus, tmp_path):
    encoder = Encoder.load(tiny_model)
    folder = tmp_path / "plain"
    build_index([corpus], encoder, folder, passages=PassageSettings(0), use_cache=False, show_progress=False,
                model=str(tiny_model))  # fmt: skip
    index = open_index(folder)
    assert "prompts" not in index.metadata
    from contriever.retrieval.retrieve import encoder_for_index

    assert encoder_for_index(index).prompts == {}


def test_cache_key_changes_with_prompts_and_not_without(prompted_model, tiny_model, corpus):
    plain = Encoder.load(tiny_model)
    prompted = Encoder.load(prompted_model)
    other = Encoder.load(prompted_model, text=TextOptions(prompts={"query": "q: "}, force_prompts=True))
    keys = [
        settings_key(encoding_settings(e, [corpus], model="m", passages=PassageSettings(0)))
        for e in (plain, prompted, other)
    ]
    assert len(set(keys)) == 3
    settings = encoding_settings(plain, [corpus], model="m", passages=PassageSettings(0))
    assert "prompts" not in settings  # a model without prompts keeps the key it had before prompts existed
    assert cache_folder(settings).name == keys[0]


@pytest.mark.bad_input
def test_command_line_prompt_for_a_model_that_records_another_is_refused_unless_forced(
    prompted_model, corpus, tmp_path, capsys
):
    from contriever.cli.main import main

    common = ["index", "--corpus", str(corpus), "--model", str(prompted_model), "--quiet", "--no-cache"]
    code = main([*common, "--output", str(tmp_path / "a"), "--query-prompt", "question: "])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "records the query prompt 'query: '; refusing 'question: '" in error[0]
    assert not (tmp_path / "a").exists()
    assert (
        main([*common, "--output", str(tmp_path / "b"), "--passage-prompt", "text: ", "--force-prompts"]) == 0
    )
    assert open_index(tmp_path / "b").metadata["prompts"] == {"query": "query: ", "passage": "text: "}
