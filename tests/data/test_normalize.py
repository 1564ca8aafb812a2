"""The paper code's text options: its `normalize_text` table and lowercasing, everywhere text is encoded."""

from __future__ import annotations

import json

import pytest

from contriever.data.normalize import NORMALIZE_TABLE, normalize_text, transform_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\u2013b \u2014 c\u2212d \u2010\u2011\u2012\u2015\u2043\uff0d\u207b", "a-b - c-d -------"),
        ("\u201cquoted\u201d \u201e\u201f", '"quoted" ""'),
        ("it\u2019s \u2018x\u2019 \u201a\u201b \u055a\ua78b\ua78c\uff07 `\u00b4", "it's 'x' '' '''' ''"),
        ("5\u2032 6\u2033 \u2034 \u2035 \u2036 \u2037 \u2057", "5' 6'' ''' ' '' ''' ''''"),
        ("wait\u2026 so . . . on", "wait... so ... on"),
        ("1\u20442 a\u2215b", "1/2 a/b"),
        ("soft\u00adhyphen \x01\x08\x0e\x0f\x11\x1bgone", "softhyphen gone"),
        ("line\x0bfeed\x0cnext\x85end", "line feed next end"),
        # untouched, as in the released code: tildes (commented out there), plus signs, tabs/newlines,
        # letters and other punctuation
        ("~ \u02dc \u223c \u301c \uff5e + \uff0b \u207a \t\n \u00e9 \u00ab\u00bb", None),
    ],
)
def test_normalize_text_table(text, expected):
    assert normalize_text(text) == (text if expected is None else expected)


def test_the_table_covers_exactly_the_released_characters():
    deleted = {c for c, v in NORMALIZE_TABLE.items() if v is None}
    assert deleted == {*range(0x01, 0x09), 0x0E, 0x0F, *range(0x11, 0x1C), 0xAD}
    assert len(NORMALIZE_TABLE) == len(deleted) + 3 + 10 + 4 + 12 + 2 + 2 + 1 + 1 + 2
    assert not {0x09, 0x0A, 0x0D, 0x7E, 0x2B} & NORMALIZE_TABLE.keys()


def test_transform_text_order_and_identity():
    text = "\u201cHello\u201d \u2014 W\u00d6RLD\u2026 \ua78b"
    assert transform_text(text) == text
    assert transform_text(text, lowercase=True) == text.lower()
    both = transform_text(text, lowercase=True, normalize=True)
    assert both == '"hello" - wörld... \'' == normalize_text(text.lower())  # the two commute


def test_encoder_applies_and_saves_the_text_options(tiny_encoder, tmp_path):
    import copy

    from contriever.model.encoder import Encoder
    from contriever.model.text_options import TextOptions

    encoder = copy.copy(tiny_encoder)  # shares the weights, not the options
    text = "\u201cSCURVY\u201d \u2014 Vitamin C"
    plain = tiny_encoder.tokenize([text])[0]
    encoder.lowercase, encoder.normalize_text = True, True
    assert encoder.tokenize([text]) == tiny_encoder.tokenize(['"scurvy" - vitamin c'])
    assert encoder.tokenize([text])[0] != plain or text.lower() == text
    encoder.save(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "sentence_bert_config.json").read_text())["do_lower_case"]
    assert json.loads((tmp_path / "model" / "config.json").read_text())["contriever_normalize_text"]
    loaded = Encoder.load(tmp_path / "model")
    assert (loaded.lowercase, loaded.normalize_text) == (True, True)
    overridden = Encoder.load(tmp_path / "model", text=TextOptions(lowercase=False, normalize_text=False))
    assert overridden.tokenize([text]) == tiny_encoder.tokenize([text])
    overridden.save(tmp_path / "plain")  # switched off, nothing of it is left in the folder
    assert "contriever_normalize_text" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    assert (Encoder.load(tmp_path / "plain").lowercase, Encoder.load(tmp_path / "plain").normalize_text) == (
        False,
        False,
    )


def test_prepare_applies_the_text_options(tmp_path):
    import numpy as np
    from transformers import AutoTokenizer

    from contriever.data.prepare import DocumentSettings, prepare
    from contriever.model.encoder import default_model_path

    text = "Caf\u00e9 \u201cMENU\u201d \u2014 prices\u2026"
    (tmp_path / "docs.txt").write_text(text + "\n")
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    for options, expected in (
        ({}, text),
        ({"lowercase": True, "normalize_text": True}, 'café "menu" - prices...'),
    ):
        out = prepare(
            [tmp_path / "docs.txt"],
            str(default_model_path()),
            tmp_path / f"p{len(options)}",
            workers=1,
            show_progress=False,
            documents=DocumentSettings(**options),
        )
        meta = json.loads((out / "meta.json").read_text())
        assert meta["normalize_text"] == bool(options) and meta["lowercase"] == bool(options)
        tokens = np.fromfile(out / "tokens.bin", dtype=meta["dtype"]).tolist()
        assert tokens == tokenizer(expected, add_special_tokens=False)["input_ids"]


def test_config_text_options_reach_the_encoder():
    from contriever.training.config import load_config
    from contriever.training.trainer import build_encoder

    tiny = [
        "model.init=scratch",
        "model.hidden_size=32",
        "model.num_hidden_layers=1",
        "model.num_attention_heads=2",
        "model.intermediate_size=64",
    ]
    encoder = build_encoder(load_config(None, [*tiny, "model.normalize_text=true"]))
    assert (encoder.lowercase, encoder.normalize_text) == (False, True)
    assert build_encoder(load_config(None, tiny)).normalize_text is False
