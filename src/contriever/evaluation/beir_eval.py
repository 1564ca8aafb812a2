"""The BEIR evaluation job: one dataset split, one system, metrics and a TREC run.

`model` names the system:

- `"default"`: the default dense model (`Encoder.load()`);
- a model folder (or Hub id): that dense model;
- `"bm25"`: BM25 with BEIR's settings (`contriever.retrieval.bm25`);
- `"hybrid"`, `"hybrid:default"` or `"hybrid:PATH"`: BM25 fused with the dense model by reciprocal
  rank fusion.

`output_dir` receives `metrics.json` (the metrics as fractions plus a `meta` block: system, data,
counts, settings, timings in seconds) and `run.trec` (the top-k documents of every query).
"""

from __future__ import annotations

import logging
import os
import platform
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from contriever.errors import UsageError
from contriever.evaluation.metrics import METRICS, evaluate_run, write_trec_run
from contriever.io import atomic_files, write_json
from contriever.model.text_options import TextOptions
from contriever.retrieval.settings import EncodingSettings, SearchSettings, merge_settings

PASSAGE_DEPTH = 10  # passages retrieved per document wanted, when documents are scored by their best passage
COLUMNS = {"ndcg@10": "nDCG@10", "recall@100": "R@100", "mrr@10": "MRR@10", "recall@1000": "R@1000"}


def parse_model(model: str) -> tuple[str, str | None]:
    """`(system, model)`: system is "bm25", "dense" or "hybrid"; model the name `Encoder.load` takes."""
    model = str(model).strip()
    if model.lower() == "bm25":
        return "bm25", None
    if model.lower() == "hybrid" or model.lower().startswith("hybrid:"):
        path = model.split(":", 1)[1].strip() if ":" in model else ""
        return "hybrid", path or "default"
    if not model:
        raise ValueError("empty model name; pass 'default', 'bm25', 'hybrid:PATH' or a model folder")
    return "dense", model


def _tag(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._:-]+", "_", str(model).strip("/")).strip("_")[-60:] or "contriever"


def _describe_model_path(name: str) -> str:
    """Where the model comes from: its resolved folder, or its Hub id."""
    from contriever.model.locate import locate_model

    source = locate_model(name)
    return str(source.resolve()) if isinstance(source, Path) else source


def _load_encoder(path: str | None, max_length: int | None, device: str | None, text: TextOptions):
    import torch

    from contriever.model.encoder import Encoder

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Encoder.load(path, max_length=max_length, device=device, text=text)


def _encoded_corpus(data_dir, encoder, model_path, encoding: EncodingSettings, show_progress: bool):
    """The corpus encoded into an index folder (the encode cache, or a temporary folder):
    `(ShardedIndex, summary for meta, temporary folder or None)`."""
    from contriever.data.beir import corpus_file
    from contriever.retrieval.encode import cached_index
    from contriever.retrieval.shards import open_index

    folder, summary, temporary = cached_index(
        [corpus_file(data_dir)],
        encoder,
        model=model_path,
        passages=encoding.passages,
        batch_size=encoding.batch_size,
        precision=encoding.precision,
        show_progress=show_progress,
        use_cache=encoding.use_cache,
    )
    kept = ("passages", "encoded", "from_cache", "already_done", "token_budget")  # the budget when it encoded
    described = {key: summary.get(key) for key in kept}
    described["folder"] = None if temporary is not None else str(folder)
    return open_index(folder), described, temporary


def _open_built_index(search: SearchSettings, model: str | None, device):
    """`(index, its encoder)` for an index folder; `model`, when named, must be the folder's model
    (then the folder's `model_fingerprint` is checked to be the encoder's)."""
    from contriever.retrieval.encode import encoder_fingerprint
    from contriever.retrieval.index import load_for_search
    from contriever.retrieval.retrieve import encoder_for_index

    index, _ = load_for_search(search.index_path, search)
    recorded = index.metadata.get("model_fingerprint")
    if model is None or not recorded:
        return index, encoder_for_index(index, model, device)
    encoder = encoder_for_index(index, model, device)
    if encoder_fingerprint(encoder) != recorded:
        raise UsageError(
            f"{search.index_path} was built with {index.metadata.get('model')}, not {model}: its vectors "
            "only mean something to that model (leave --model out to use it)"
        )
    return index, encoder


def _warn_unindexed(index, qrels: Mapping, warnings: list[str]) -> None:
    """A judged document the index does not hold can never be found: say how many."""
    from contriever.data.passages import doc_id_of

    judged = {doc for docs in qrels.values() for doc in docs}
    split = bool((index.metadata.get("passages") or {}).get("words"))
    source = getattr(index, "source", index)  # an ANN index searches its folder's shards
    shards = (ids for ids, _ in source.iter_shards()) if hasattr(source, "iter_shards") else [source.ids]
    held: set[str] = set()
    for ids in shards:
        held.update(map(doc_id_of, ids) if split else ids)
        if judged <= held:
            return
    missing = len(judged - held)
    warnings.append(f"{missing} of the {len(judged)} judged documents are not in the index: never retrieved")
    logging.getLogger(__name__).warning(warnings[-1])


@dataclass
class _Job:
    """One evaluation: its data and settings, and the meta and timings it records as it goes."""

    data_dir: Path
    system: str
    model_path: str | None
    encoding: EncodingSettings
    search: SearchSettings
    show_progress: bool
    corpus: dict
    qrels: dict
    meta: dict
    timings: dict


def evaluate_beir(
    data_dir: str | os.PathLike,
    split: str = "test",
    model: str = "default",
    output_dir: str | os.PathLike | None = None,
    *,
    encoding: EncodingSettings | None = None,
    search: SearchSettings | None = None,
    show_progress: bool = True,
    **options,
) -> dict:
    """Retrieve the top `search.k` documents for every query of `split` and evaluate them: load the
    data, build the retriever, retrieve, score, write.

    Returns `{"ndcg@10", "recall@100", "mrr@10", "recall@1000", "meta"}` (metrics as fractions) and,
    with `output_dir`, writes it to `output_dir/metrics.json` with the run in `output_dir/run.trec`.
    `options` are the settings' fields by name (`k=10, words=100, index_path=IDX, ...`), laid over
    `encoding` and `search`. `encoding.precision` is the encoder's autocast ("auto": bf16 where the
    hardware is fast at it, else fp32; "fp32" for bit-stable numbers); the one used is in `meta`.

    The corpus is encoded with `contriever.retrieval.encode` into the encode cache (reused when the
    same model, settings and corpus come again; `use_cache=False` or `CONTRIEVER_CACHE=off` encode
    into a temporary folder), and so are the query vectors (`CachedQueryEncoder`; `meta` says
    `queries_from_cache`). `words > 0` splits documents into passages of `words` words
    (`overlap` shared) and scores each document by its best passage among the top
    `k * PASSAGE_DEPTH` passages; `words=0` encodes whole documents, truncated at `max_length`.

    `search.index_path` evaluates an index folder that `contriever index` built (its corpus may be
    larger than the BEIR folder's, e.g. with distractors): nothing is encoded but the queries, with
    the model the folder records (a `model` given must be that model); passages are scored as the
    folder was split. `search.ann` searches its approximate index `ann/<ann>` instead of exact
    search, with `nprobe`/`ef_search` overriding the recorded search parameters, and its top `rerank`
    candidates re-scored exactly from the folder's shards.
    """
    from contriever.data.beir import load_beir, refuse_ids_with_whitespace

    encoding, search = merge_settings(encoding, search, options)
    system, model_path = parse_model(model)
    if search.index_path is None and (search.ann or any(search.approximate.values())):
        raise ValueError(
            "ann, nprobe, ef_search and rerank search an index folder: pass index_path (--index)"
        )
    started = time.perf_counter()
    warnings: list[str] = []
    corpus, queries, qrels = load_beir(data_dir, split, warnings=warnings)
    if output_dir is not None:
        refuse_ids_with_whitespace(data_dir, corpus, queries)
    meta = _data_meta(model, system, data_dir, split, (corpus, queries, qrels), search.k, warnings)
    timings: dict[str, float] = {"load_data_s": time.perf_counter() - started}
    job = _Job(
        Path(data_dir), system, model_path, encoding, search, show_progress, corpus, qrels, meta, timings
    )
    run = _retrieve_bm25(job, queries) if system == "bm25" else _retrieve_dense(job, queries)
    evaluating = time.perf_counter()
    metrics = evaluate_run(qrels, run)
    timings["evaluate_s"] = time.perf_counter() - evaluating
    timings["total_s"] = time.perf_counter() - started
    meta["queries_without_results"] = sum(1 for qid in qrels if not run.get(qid))
    meta["timings"] = {name: round(value, 3) for name, value in timings.items()}
    meta["host"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    result = {**metrics, "meta": meta}
    if output_dir is not None:
        # Both or neither (a full disk leaves the previous pair), with a manifest of their sizes.
        with atomic_files(output_dir) as staging:
            write_trec_run(run, staging / "run.trec", tag=_tag(model))
            write_json(staging / "metrics.json", result)
    return result


def _data_meta(model, system, data_dir, split, data, k, warnings) -> dict:
    corpus, queries, qrels = data
    return {
        "model": str(model),
        "system": system,
        "data": str(Path(data_dir).resolve()),
        "dataset": Path(data_dir).resolve().name,
        "split": split,
        "corpus_size": len(corpus),
        "queries": len(queries),
        "qrels": sum(len(docs) for docs in qrels.values()),
        "k": k,
        "warnings": warnings,
    }


def _retrieve_bm25(job: _Job, queries: dict) -> dict:
    from contriever.retrieval.bm25 import DEFAULTS
    from contriever.retrieval.retrievers import BM25Retriever

    run = BM25Retriever(job.corpus, show_progress=job.show_progress, timings=job.timings).retrieve(
        queries, job.search.k
    )
    job.meta["bm25"] = dict(DEFAULTS)
    return run


def _retrieve_dense(job: _Job, queries: dict) -> dict:
    """Dense or hybrid: the index (the encoded corpus, or the folder named), its retriever, the run."""
    from contriever.retrieval.encode import CachedQueryEncoder
    from contriever.retrieval.retrievers import BM25Retriever, DenseRetriever, HybridRetriever

    encoder, index, passage_depth, temporary = _dense_index(job)
    searching: dict[str, float] = {}
    bm25_timings: dict[str, float] = {}
    retriever = DenseRetriever(
        encoder,
        index,
        batch_size=job.encoding.batch_size,
        precision=job.encoding.precision,
        passage_depth=passage_depth,
        show_progress=job.show_progress,
        timings=searching,
    )
    if job.system == "hybrid":
        from contriever.retrieval.bm25 import DEFAULTS

        lexical = BM25Retriever(job.corpus, show_progress=job.show_progress, timings=bm25_timings)
        retriever = HybridRetriever(lexical, retriever, "rrf", timings=searching)
        job.meta.update(fusion="rrf", rrf_k=60, bm25=dict(DEFAULTS))
    run = retriever.retrieve(queries, job.search.k)
    corpus_seconds = job.timings.pop("encode_corpus_s")
    job.timings.update({f"bm25_{name}": value for name, value in bm25_timings.items()})
    job.timings["encode_corpus_s"] = corpus_seconds  # the retrievers saw a ready index
    job.timings.update(searching)
    job.meta["queries_from_cache"] = isinstance(encoder, CachedQueryEncoder) and encoder.hits > 0
    if temporary is not None:
        temporary.cleanup()
    return run


def _dense_index(job: _Job):
    """`(query encoder, index, passage depth, temporary folder or None)`, recording in `job.meta`
    how the corpus was encoded (or which folder is searched) and in `job.timings` how long it took."""
    from contriever.model.encoder import resolve_precision
    from contriever.retrieval.encode import CachedQueryEncoder, cache_dir

    encoding, search, meta = job.encoding, job.search, job.meta
    loading = time.perf_counter()
    if search.index_path is None:
        encoder = _load_encoder(job.model_path, encoding.max_length, encoding.device, encoding.text_options())
    else:
        index, encoder = _open_built_index(search, job.model_path, encoding.device)
        split = index.metadata.get("passages") or {}  # how the folder was split: its scoring
        encoding = replace(
            encoding, words=int(split.get("words") or 0), overlap=int(split.get("overlap") or 0)
        )
    job.timings["load_model_s"] = time.perf_counter() - loading
    meta.update(
        model_path=_describe_model_path(job.model_path),
        pooling=encoder.pooling,
        normalize=encoder.normalize,
        max_length=encoder.max_length,
        lowercase=encoder.lowercase,
        normalize_text=encoder.normalize_text,
        prompts=dict(getattr(encoder, "prompts", {})),
        batch_size=encoding.batch_size,
        index_factory=encoding.index_factory,
        device=str(encoder.device),
        precision=resolve_precision(encoding.precision, encoder.device),
    )
    temporary = None
    encoding_started = time.perf_counter()
    if search.index_path is not None:
        _describe_searched_index(index, job)
    else:
        index, temporary = _encode_corpus(encoder, job)
    job.timings["encode_corpus_s"] = time.perf_counter() - encoding_started
    cache_root = cache_dir() if encoding.use_cache else None
    if cache_root is not None:  # queries searched before with this model are not encoded again
        # the folder's fingerprint is this encoder's when the corpus was just encoded with it or
        # a named model was checked against it; else (the folder's own model, loaded from where
        # the folder says) it is taken from the weights
        checked = search.index_path is None or job.model_path is not None
        fingerprint = index.metadata.get("model_fingerprint") if checked else None
        encoder = CachedQueryEncoder(encoder, cache_root, fingerprint=fingerprint)
    words = encoding.words
    meta.update(words=words, overlap=encoding.overlap, scoring="max over passages" if words else "truncation")
    return encoder, index, PASSAGE_DEPTH if words else 0, temporary


def _describe_searched_index(index, job: _Job) -> None:
    from contriever.retrieval.ann import AnnIndex

    search = job.search
    job.meta.update(index=str(Path(search.index_path).resolve()), indexed=len(index))
    if isinstance(index, AnnIndex):  # named by --ann, or the folder's own (`index --index-factory`)
        job.meta.update(
            ann=index.path.name,
            index_factory=index.factory,
            search_params=dict(index.search_params),
            rerank=index.rerank,  # re-scores max(rerank, the depth searched) candidates
        )
    _warn_unindexed(index, job.qrels, job.meta["warnings"])


def _encode_corpus(encoder, job: _Job):
    """The BEIR corpus encoded (or found in the cache): `(index, temporary folder or None)`; a
    factory other than Flat is searched through that ANN, built over the folder into a temporary one."""
    from contriever.retrieval.ann import check_factory, is_flat, temporary_ann

    encoding = job.encoding
    factory = encoding.index_factory
    check_factory(encoder.dim, factory, None if encoding.words else len(job.corpus))  # before encoding
    index, job.meta["encoding"], temporary = _encoded_corpus(
        job.data_dir, encoder, job.model_path, encoding, job.show_progress
    )
    if not is_flat(factory):
        index = temporary_ann(index, factory, show_progress=job.show_progress)
    return index, temporary


def format_table(results: Mapping, title: str | None = None) -> str:
    """A plain-text table of metrics x100 (one decimal, as in the paper), one row per system.

    `results` is one `evaluate_beir` result, or `{name: result}` for several systems.
    """
    if "ndcg@10" in results:
        results = {results.get("meta", {}).get("model", "model"): results}
    rows = []
    for name, metrics in results.items():
        seconds = (metrics.get("meta") or {}).get("timings", {}).get("total_s")
        cells = [f"{100 * metrics[key]:.1f}" if key in metrics else "-" for key in METRICS]
        rows.append([str(name), *cells, f"{seconds:.0f}" if seconds is not None else "-"])
    header = ["system", *(COLUMNS[key] for key in METRICS), "time (s)"]
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(cells)
        )

    out = [title] if title else []
    out += [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]
    return "\n".join(out)
