from __future__ import annotations

from pathlib import Path

import pytest

from contriever.errors import ConfigError
from contriever.training.config import Config, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_every_preset_loads(name):
    assert isinstance(load_config(CONFIGS / name), Config)


def test_paper_preset_has_the_paper_settings():
    config = load_config(CONFIGS / "contriever-paper.toml")
    assert (config.train.batch_size, config.train.steps) == (2048, 500000)
    assert (config.loss.queue_size, config.loss.momentum, config.loss.temperature) == (131072, 0.9995, 0.05)
    assert (config.data.ratio_min, config.data.ratio_max) == (0.05, 0.5)
    assert (config.data.augmentation, config.data.augmentation_prob) == ("delete", 0.1)
    assert (config.optim.lr, config.optim.warmup_steps, config.optim.betas) == (5e-5, 20000, (0.9, 0.98))


def test_base_file_is_merged_and_overridden():
    config = load_config(CONFIGS / "mcontriever-paper.toml")
    assert config.model.path == "bert-base-multilingual-cased"
    assert config.loss.queue_size == 131072  # inherited


def test_misspelled_key_is_an_error_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'queue_size'"):
        load_config(None, ["loss.queue_szie=1024"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[loss]\nqueue_sise = 4096\n")
    with pytest.raises(ConfigError, match="loss.queue_sise"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown config key 'lossy'"):
        load_config(None, ["lossy.kind=moco"])


def test_overrides_are_typed():
    config = load_config(
        None, ["train.steps=10", "optim.lr=1e-4", 'data.folders=["a", "b"]', "loss.kind=inbatch"]
    )
    assert config.train.steps == 10 and config.optim.lr == 1e-4 and config.data.folders == ["a", "b"]
    assert config.loss.kind == "inbatch"
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(None, ["train.steps=ten"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(None, ["loss.kind=simclr"])


def test_impossible_combinations_are_rejected():
    with pytest.raises(ConfigError, match="ratio_min"):
        load_config(None, ["data.ratio_min=0.6", "data.ratio_max=0.5"])
    with pytest.raises(ConfigError, match="gradcache"):
        load_config(None, ["loss.kind=moco", "loss.gradcache_chunk=8"])


@pytest.mark.parametrize(
    "override", ["model.dropout=1.5", "model.attention_dropout=-0.1", "finetune.dev_corpus_size=-5"]
)
def test_out_of_range_values_are_errors(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(None, [override])
