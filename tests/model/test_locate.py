"""Model names: local folders, mistyped paths (fail at once), Hub ids (cache, Hub, offline rules).

No Hub is reachable here: the Hub is played by monkeypatched transformers loaders and probe.
"""

from __future__ import annotations

import copy
import socket

import pytest
import torch

from contriever.model import locate
from contriever.model.encoder import Encoder
from contriever.model.locate import from_pretrained, hub_reachable, locate_model, looks_like_path

FAKE_HUB_ID = "fake-org/tiny-contriever"


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything probes the Hub."""

    def probe(*args, **kwargs):
        raise AssertionError("the Hub was probed")

    monkeypatch.setattr(locate, "hub_reachable", probe)
    for name in locate.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)


class FakeHub:
    """A transformers-style loader: serves FAKE_HUB_ID from 'the Hub' (never from the cache)."""

    def __init__(self, make, cached: bool = False):
        self.make = make  # returns what the loader gives
        self.cached = cached
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, name, **kwargs):
        self.calls.append((name, kwargs))
        if name != FAKE_HUB_ID:
            raise OSError(f"{name} is not a local folder and is not a valid model identifier")
        if kwargs.get("local_files_only") and not self.cached:
            raise OSError("We couldn't connect to the Hub and cannot find it in the cached files")
        return self.make()


@pytest.mark.parametrize(
    "name",
    ["./runs/model", "/no/such/model", "~/no-such-model-here", "a/b/c", "runs\\model", "model/", "bad name!"],
)
def test_names_that_can_only_be_paths(name):
    assert looks_like_path(name)


@pytest.mark.parametrize("name", ["bert-base-uncased", "facebook/contriever", "xlm-roberta-base", "org/m.v2"])
def test_hub_like_names(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_like_path(name)
    assert locate_model(name) == name


def test_existing_folder_is_local(tmp_path, monkeypatch):
    (tmp_path / "runs" / "cpu-small").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert locate_model("runs/cpu-small") == tmp_path.joinpath("runs", "cpu-small").relative_to(tmp_path)


def test_mistyped_local_path_fails_at_once_without_the_hub(tmp_path, monkeypatch, no_network):
    (tmp_path / "runs" / "cpu-small").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    loader = FakeHub(lambda: None)
    monkeypatch.setattr("transformers.AutoModel.from_pretrained", loader)
    with pytest.raises(FileNotFoundError, match=r"runs/cpu-smal: no such model folder.*cpu-small"):
        Encoder.load("runs/cpu-smal")
    assert loader.calls == []  # neither transformers nor the network was asked


def test_folder_without_config_is_not_a_model(tmp_path, no_network):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Encoder.load(tmp_path)


def _patch_hub(monkeypatch, tiny_encoder, cached=False):
    model_loader = FakeHub(lambda: copy.deepcopy(tiny_encoder.model), cached)
    tokenizer_loader = FakeHub(lambda: tiny_encoder.tokenizer, cached)
    monkeypatch.setattr("transformers.AutoModel.from_pretrained", model_loader)
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", tokenizer_loader)
    monkeypatch.setattr("contriever.model.encoder.hub_sentence_transformers_settings", lambda name: {})
    return model_loader, tokenizer_loader


def test_hub_id_goes_to_transformers(monkeypatch, tiny_encoder):
    for name in locate.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    probes = []
    monkeypatch.setattr(locate, "hub_reachable", lambda address=None, **kw: probes.append(address) or True)
    model_loader, tokenizer_loader = _patch_hub(monkeypatch, tiny_encoder)
    encoder = Encoder.load(FAKE_HUB_ID)
    # the cache was tried first, then (reachable) the Hub
    assert [kw.get("local_files_only", False) for _, kw in model_loader.calls] == [True, False]
    assert model_loader.calls[-1][1]["add_pooling_layer"] is False
    assert tokenizer_loader.calls[-1][0] == FAKE_HUB_ID
    assert len(probes) == 2  # once for the model, once for the tokenizer (both cache misses)
    assert (encoder.pooling, encoder.normalize, encoder.max_length) == ("mean", False, 512)
    vectors = encoder.encode_queries(["a question"], show_progress=False)
    expected = tiny_encoder.encode_queries(["a question"], show_progress=False)
    assert torch.allclose(torch.from_numpy(vectors), torch.from_numpy(expected), atol=1e-6)


def test_cached_hub_id_needs_no_network(monkeypatch, tiny_encoder, no_network):
    model_loader, _ = _patch_hub(monkeypatch, tiny_encoder, cached=True)
    Encoder.load(FAKE_HUB_ID)
    assert [kw.get("local_files_only") for _, kw in model_loader.calls] == [True]


@pytest.mark.parametrize("variable", locate.OFFLINE_ENV)
def test_offline_never_waits_on_the_network(monkeypatch, tiny_encoder, no_network, variable):
    monkeypatch.setenv(variable, "1")
    model_loader, _ = _patch_hub(monkeypatch, tiny_encoder)
    with pytest.raises(FileNotFoundError, match=rf"{FAKE_HUB_ID}: not a local folder.*{variable}"):
        Encoder.load(FAKE_HUB_ID)
    assert all(kw.get("local_files_only") for _, kw in model_loader.calls)


@pytest.mark.bad_input
def test_unreachable_hub_is_a_clear_error(monkeypatch, tiny_encoder):
    for name in locate.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(locate, "hub_reachable", lambda address=None, **kw: False)
    model_loader, _ = _patch_hub(monkeypatch, tiny_encoder)
    with pytest.raises(FileNotFoundError, match="cannot be reached"):
        Encoder.load("bert-base-uncased")
    assert all(kw.get("local_files_only") for _, kw in model_loader.calls)  # never the slow download


@pytest.mark.bad_input
def test_unknown_hub_id_keeps_a_clear_error(monkeypatch):
    for name in locate.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(locate, "hub_reachable", lambda address=None, **kw: True)
    loader = FakeHub(lambda: None)
    with pytest.raises(FileNotFoundError, match=r"no-org/no-model: not a local folder.*could not provide it"):
        from_pretrained(loader, locate_model("no-org/no-model"))


def test_hub_address_follows_endpoint_and_proxy(monkeypatch):
    for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert locate.hub_address() == ("huggingface.co", 443)
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example:8080")
    assert locate.hub_address() == ("mirror.example", 8080)
    monkeypatch.setenv("HTTPS_PROXY", "proxy.example:3128")
    assert locate.hub_address() == ("proxy.example", 3128)


def test_hub_reachable_probe():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert hub_reachable(("127.0.0.1", port), timeout=2.0)
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        free_port = closed.getsockname()[1]
    assert not hub_reachable(("127.0.0.1", free_port), timeout=2.0)


@pytest.mark.parametrize("preset", ["contriever-paper.toml", "mcontriever-paper.toml"])
def test_paper_presets_hand_their_hub_model_to_transformers(preset, monkeypatch, tiny_encoder, no_network):
    from pathlib import Path

    from contriever.training.config import load_config
    from contriever.training.trainer import build_encoder

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / preset)
    assert not Path(config.model.path).exists()  # a Hub id, not a folder here
    served = []

    def serve(name, **kwargs):
        served.append(name)
        return copy.deepcopy(tiny_encoder.model)

    monkeypatch.setattr("transformers.AutoModel.from_pretrained", serve)
    monkeypatch.setattr(
        "transformers.AutoTokenizer.from_pretrained", lambda name, **kw: tiny_encoder.tokenizer
    )
    monkeypatch.setattr("contriever.model.encoder.hub_sentence_transformers_settings", lambda name: {})
    encoder = build_encoder(config)
    assert served == [config.model.path]  # from the (fake) cache, no network involved
    assert encoder.pooling == "mean" and not encoder.normalize


def test_hub_models_bring_their_sentence_transformers_settings(monkeypatch, tmp_path, no_network):
    """A Hub sentence-transformers model (normalized, cls pooling) keeps its settings; the files come
    through the same cache-first rules as the model (here: from the fake cache)."""
    import json

    from contriever.model.encoder import hub_sentence_transformers_settings

    snapshot = tmp_path / "snapshot"
    (snapshot / "1_Pooling").mkdir(parents=True)
    (snapshot / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ]
        )
    )
    (snapshot / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (snapshot / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": True})
    )
    calls = []

    def fake_snapshot_download(name, **kwargs):
        calls.append((name, kwargs))
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    settings = hub_sentence_transformers_settings(FAKE_HUB_ID)
    assert settings == {"pooling": "cls", "normalize": True, "max_length": 128, "lowercase": True}
    assert calls[0][0] == FAKE_HUB_ID and calls[0][1]["local_files_only"] is True

    def failing(name, **kwargs):
        raise OSError("not cached")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.snapshot_download", failing)
    assert hub_sentence_transformers_settings(FAKE_HUB_ID) == {}  # optional files: Contriever's recipe
