"""Loading what to serve, the missing-extra message, and the load generator's loopback rule."""

from __future__ import annotations

import importlib.util

import pytest

from contriever.serving import require_serve_extra
from contriever.serving.loadtest import require_loopback


def test_missing_serve_extra_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "uvicorn" else real(name))
    with pytest.raises(ImportError, match=r"uvicorn.*pip install 'contriever\[serve\]'"):
        require_serve_extra()


def test_cli_reports_the_missing_extra(monkeypatch, capsys):
    from contriever.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "fastapi" else real(name))
    with pytest.raises(SystemExit, match=r"needs fastapi"):
        main(["serve", "--data", "nowhere"])


def test_load_searcher_says_what_is_missing(tiny_service):
    from contriever.serving.server import ServeSources, load_searcher

    with pytest.raises(ValueError, match="nothing to serve"):
        load_searcher(ServeSources())
    with pytest.raises(ValueError, match="at most one of --data"):
        load_searcher(
            ServeSources(data=str(tiny_service["data"]), corpus=str(tiny_service["data"] / "corpus.jsonl"))
        )


def test_bm25_folder_is_built_once_then_loaded(tiny_service, tmp_path):
    from contriever.serving.server import ServeSources, load_searcher

    folder = tmp_path / "bm25"
    sources = ServeSources(data=str(tiny_service["data"]), bm25=str(folder))
    first = load_searcher(sources, show_progress=False)
    assert (folder / "bm25.json").is_file() and first.modes == ("bm25",)
    again = load_searcher(sources, show_progress=False)
    assert again.bm25.retrieve({"q": "vitamin"}, 3) == first.bm25.retrieve({"q": "vitamin"}, 3)


def test_load_generator_refuses_addresses_off_this_machine():
    assert require_loopback("http://127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert require_loopback("http://[::1]:9000") == ("::1", 9000)
    for url in ("http://10.1.2.3:8000", "http://192.0.2.7", "https://127.0.0.1:8000"):
        with pytest.raises(ValueError):
            require_loopback(url)


def test_an_index_folder_alone_serves_titles_and_bm25_from_its_passage_store(tiny_service):
    from contriever.serving.searcher import StoreDocuments
    from contriever.serving.server import ServeSources, load_searcher

    searcher = load_searcher(ServeSources(index=str(tiny_service["index"])), show_progress=False)
    assert isinstance(searcher.documents, StoreDocuments)
    assert searcher.modes == ("dense", "bm25", "hybrid")
    assert searcher.documents.get("scurvy")["title"] == "Scurvy"
    assert searcher.documents.get("no-such-id") is None
    described = searcher.describe("vitamin", [("rickets", 1.0)])[0]
    assert described["title"] == "Rickets" and described["highlights"]
    assert list(searcher.bm25.retrieve({"q": "mosquitoes"}, 3)["q"]) == ["malaria"]


def test_without_a_store_the_corpus_the_index_records_is_read(tiny_service, tmp_path):
    import shutil

    from contriever.serving.searcher import CorpusDocuments
    from contriever.serving.server import ServeSources, load_searcher

    index = tmp_path / "index"
    shutil.copytree(tiny_service["index"], index)
    (index / "passages.sqlite").unlink()
    searcher = load_searcher(ServeSources(index=str(index)), show_progress=False)
    assert isinstance(searcher.documents, CorpusDocuments)
    assert searcher.modes == ("dense", "bm25", "hybrid")
    assert searcher.documents.get("scurvy")["title"] == "Scurvy"


def test_a_large_flat_index_is_searched_from_its_shards_with_the_same_results(tiny_service, monkeypatch):
    from contriever.retrieval.shards import FP32_KEEP_ENV, ShardedIndex
    from contriever.serving import server
    from contriever.serving.searcher import EncodeJob

    sources = server.ServeSources(index=str(tiny_service["index"]), no_bm25=True)
    in_memory = server.load_searcher(sources)  # fp32 copies kept in RAM
    monkeypatch.setenv(FP32_KEEP_ENV, "0")  # too large to keep: converted chunk by chunk at every search
    mapped = server.load_searcher(sources)
    assert isinstance(in_memory.dense.index, ShardedIndex) and isinstance(mapped.dense.index, ShardedIndex)
    jobs = [EncodeJob("vitamin deficiency", 5), EncodeJob("cells", 12)]
    for a, b in zip(in_memory.encode_batch(jobs), mapped.encode_batch(jobs)):
        assert [i for i, _ in a.hits] == [i for i, _ in b.hits]
        assert [s for _, s in a.hits] == pytest.approx([s for _, s in b.hits], rel=1e-5)


def test_model_names_reported_by_the_api():
    from contriever.serving.server import model_name

    assert model_name(None) == model_name("default") == "all-MiniLM-L6-v2"
    assert model_name("runs/scifact-ft/best") == "scifact-ft/best"
    assert model_name("/models/my-retriever") == "my-retriever"


def test_an_approximate_index_is_served_with_the_exact_results_when_every_list_is_probed(
    tiny_service, tmp_path
):
    import shutil

    from contriever.retrieval.ann import AnnIndex, build_ann
    from contriever.retrieval.settings import SearchSettings
    from contriever.serving import server
    from contriever.serving.searcher import EncodeJob

    index = shutil.copytree(tiny_service["index"], tmp_path / "index")
    build_ann(index, "IVF2,Flat", train_size=12, show_progress=False)  # the dozen documents

    def load(**search):
        return server.load_searcher(
            server.ServeSources(index=str(index), no_bm25=True, search=SearchSettings(**search))
        )

    exact = load()
    approx = load(ann="IVF2_Flat", nprobe=2)
    assert isinstance(approx.dense.index, AnnIndex) and approx.dense.index.search_params == {"nprobe": 2}
    jobs = [EncodeJob("vitamin deficiency", 5), EncodeJob("cells", 12)]
    for a, b in zip(exact.encode_batch(jobs), approx.encode_batch(jobs)):
        assert [i for i, _ in a.hits] == [i for i, _ in b.hits]
        assert [s for _, s in a.hits] == pytest.approx([s for _, s in b.hits], rel=1e-5)
    with pytest.raises(ValueError, match="no ANN index named 'HNSW8'"):
        load(ann="HNSW8")
    with pytest.raises(ValueError, match="add --ann NAME"):
        load(nprobe=4)
    reranked = load(ann="IVF2_Flat", nprobe=2, rerank=20)
    assert reranked.dense.index.rerank == 20
    for a, b in zip(exact.encode_batch(jobs), reranked.encode_batch(jobs)):
        assert [i for i, _ in a.hits] == [i for i, _ in b.hits]


def test_info_logging_hides_faiss_and_bm25s_chatter(searcher, caplog):
    import logging

    from contriever.serving.server import CHATTY_LOGGERS, configure_logging

    try:
        configure_logging("info")
        for name in CHATTY_LOGGERS:
            assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING
        with caplog.at_level(logging.INFO):
            assert searcher.bm25.retrieve({"q": "zzqx qqzx"}, 5) == {"q": {}}  # only unknown words
        assert "query is empty" not in caplog.text
        configure_logging("debug")
        assert logging.getLogger("bm25s").getEffectiveLevel() == logging.DEBUG
    finally:
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        logging.getLogger("bm25s").setLevel(logging.DEBUG)  # as bm25s leaves it


def test_serve_options_become_settings(monkeypatch, capsys):
    from contriever.cli.main import build_parser
    from contriever.cli.serve import API_KEY_ENV, settings_from_args, sources_from_args

    parse = build_parser().parse_args
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    args = parse(["serve", "--index", "idx", "--max-queue", "16", "--precision", "fp32", "--no-batching"])
    settings = settings_from_args(args)
    assert settings.max_queue == 16 and settings.batching is False and settings.api_key is None
    assert args.precision == "fp32" and settings.allowed_hosts is not None  # loopback: Host checked
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert settings_from_args(parse(["serve", "--index", "idx"])).api_key == "from-env"
    assert settings_from_args(parse(["serve", "--index", "idx", "--api-key", "given"])).api_key == "given"
    with pytest.raises(SystemExit):
        parse(["serve", "--help"])
    shown = capsys.readouterr().out
    assert "--api-key" in shown and "from-env" not in shown  # a key set in the environment stays unseen
    assert settings_from_args(parse(["serve", "--index", "idx", "--host", "0.0.0.0"])).allowed_hosts is None
    with pytest.raises(SystemExit):
        parse(["serve", "--index", "idx", "--precision", "fp16"])
    sources = sources_from_args(parse(["serve", "--index", "idx", "--ann", "IVF2_Flat", "--nprobe", "4"]))
    assert sources.index == "idx" and sources.search.ann == "IVF2_Flat" and sources.search.nprobe == 4
    assert sources.search.ef_search is None and sources.search.rerank is None and not sources.no_bm25
