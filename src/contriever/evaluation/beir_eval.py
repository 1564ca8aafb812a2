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
from pathlib import Path

from contriever.errors import UsageError
from contriever.evaluation.metrics import METRICS, evaluate_run, write_trec_run
from contriever.io import atomic_files, write_json

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


def _load_encoder(path: str | None, max_length: int | None, device: str | None, **text_options):
    import torch

    from contriever.model.encoder import Encoder

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Encoder.load(path, max_length=max_length, device=device, **text_options)


def _encoded_corpus(
    data_dir, encoder, model_path, words, overlap, batch_size, precision, use_cache, show_progress
):
    """The corpus encoded into an index folder (the encode cache, or a temporary folder):
    `(ShardedIndex, summary for meta, temporary folder or None)`."""
    from contriever.data.beir import corpus_file
    from contriever.data.passages import PassageSettings
    from contriever.retrieval.encode import cached_index
    from contriever.retrieval.shards import open_index

    folder, summary, temporary = cached_index(
        [corpus_file(data_dir)],
        encoder,
        model=model_path,
        passages=PassageSettings(words, overlap),
        batch_size=batch_size,
        precision=precision,
        show_progress=show_progress,
        use_cache=use_cache,
    )
    described = {key: summary.get(key) for key in ("passages", "encoded", "from_cache", "already_done")}
    described["folder"] = None if temporary is not None else str(folder)
    return open_index(folder), described, temporary


def _open_built_index(index_path, model: str | None, device, ann, search_params: dict):
    """`(index, its encoder)` for an index folder; `model`, when named, must be the folder's model
    (then the folder's `model_fingerprint` is checked to be the encoder's)."""
    from contriever.retrieval.encode import encoder_fingerprint
    from contriever.retrieval.index import load_for_search
    from contriever.retrieval.retrieve import encoder_for_index

    index, _ = load_for_search(index_path, ann, **search_params)
    recorded = index.metadata.get("model_fingerprint")
    if model is None or not recorded:
        return index, encoder_for_index(index, model, device)
    encoder = encoder_for_index(index, model, device)
    if encoder_fingerprint(encoder) != recorded:
        raise UsageError(
            f"{index_path} was built with {index.metadata.get('model')}, not {model}: its vectors "
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


def evaluate_beir(
    data_dir: str | os.PathLike,
    split: str = "test",
    model: str = "default",
    output_dir: str | os.PathLike | None = None,
    k: int = 1000,
    batch_size: int | None = None,
    index_factory: str = "Flat",
    max_length: int | None = None,
    *,
    device: str | None = None,
    precision: str = "auto",
    show_progress: bool = True,
    words: int = 0,
    overlap: int = 0,
    use_cache: bool = True,
    lowercase: bool | None = None,
    normalize_text: bool | None = None,
    prompts: dict[str, str] | None = None,
    force_prompts: bool = False,
    index_path: str | os.PathLike | None = None,
    ann: str | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    rerank: int | None = None,
) -> dict:
    """Retrieve the top `k` documents for every query of `split` and evaluate them.

    Returns `{"ndcg@10", "recall@100", "mrr@10", "recall@1000", "meta"}` (metrics as fractions) and,
    with `output_dir`, writes it to `output_dir/metrics.json` with the run in `output_dir/run.trec`.
    `precision` is the encoder's autocast ("auto": bf16 where the hardware is fast at it, else fp32;
    "fp32" for bit-stable numbers); the one used is recorded in `meta`.

    The corpus is encoded with `contriever.retrieval.encode` into the encode cache (reused when the
    same model, settings and corpus come again; `use_cache=False` or `CONTRIEVER_CACHE=off` encode
    into a temporary folder), and so are the query vectors (`CachedQueryEncoder`; `meta` says
    `queries_from_cache`). `words > 0` splits documents into passages of `words` words
    (`overlap` shared) and scores each document by its best passage among the top
    `k * PASSAGE_DEPTH` passages; `words=0` encodes whole documents, truncated at `max_length`.

    `index_path` evaluates an index folder that `contriever index` built (its corpus may be larger
    than the BEIR folder's, e.g. with distractors): nothing is encoded but the queries, with the
    model the folder records (a `model` given must be that model); passages are scored as the folder
    was split. `ann` searches its approximate index `ann/<ann>` instead of exact search, with
    `nprobe`/`ef_search` overriding the recorded search parameters, and its top `rerank` candidates
    re-scored exactly from the folder's shards.
    """
    from contriever.data.beir import load_beir, refuse_ids_with_whitespace
    from contriever.model.encoder import resolve_precision
    from contriever.retrieval.encode import CachedQueryEncoder, cache_dir
    from contriever.retrieval.retrieve import bm25_retrieve, dense_retrieve, hybrid_retrieve

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    system, model_path = parse_model(model)
    search_params = {"nprobe": nprobe, "ef_search": ef_search, "rerank": rerank}
    if index_path is None and (ann or any(search_params.values())):
        raise ValueError(
            "ann, nprobe, ef_search and rerank search an index folder: pass index_path (--index)"
        )
    started = time.perf_counter()
    warnings: list[str] = []
    corpus, queries, qrels = load_beir(data_dir, split, warnings=warnings)
    if output_dir is not None:
        refuse_ids_with_whitespace(data_dir, corpus, queries)
    timings: dict[str, float] = {"load_data_s": time.perf_counter() - started}
    meta: dict = {
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
    if system == "bm25":
        from contriever.retrieval.bm25 import DEFAULTS

        run = bm25_retrieve(corpus, queries, k, show_progress=show_progress, timings=timings)
        meta["bm25"] = dict(DEFAULTS)
    else:
        loading = time.perf_counter()
        if index_path is None:
            encoder = _load_encoder(
                model_path,
                max_length,
                device,
                lowercase=lowercase,
                normalize_text=normalize_text,
                prompts=prompts,
                force_prompts=force_prompts,
            )
        else:
            index, encoder = _open_built_index(index_path, model_path, device, ann, search_params)
            split = index.metadata.get("passages") or {}  # how the folder was split: its scoring
            words, overlap = int(split.get("words") or 0), int(split.get("overlap") or 0)
        timings["load_model_s"] = time.perf_counter() - loading
        meta.update(
            model_path=_describe_model_path(model_path),
            pooling=encoder.pooling,
            normalize=encoder.normalize,
            max_length=encoder.max_length,
            lowercase=encoder.lowercase,
            normalize_text=encoder.normalize_text,
            prompts=dict(getattr(encoder, "prompts", {})),
            batch_size=batch_size,
            index_factory=index_factory,
            device=str(encoder.device),
            precision=resolve_precision(precision, encoder.device),
        )
        temporary = None
        encoding = time.perf_counter()
        if index_path is not None:
            meta.update(index=str(Path(index_path).resolve()), indexed=len(index))
            if ann:
                meta.update(
                    ann=ann,
                    index_factory=index.factory,
                    search_params=dict(index.search_params),
                    rerank=index.rerank,  # re-scores max(rerank, the depth searched) candidates
                )
            _warn_unindexed(index, qrels, warnings)
        else:
            from contriever.retrieval.index import check_factory

            check_factory(encoder.dim, index_factory, None if words else len(corpus))  # before encoding
            index, meta["encoding"], temporary = _encoded_corpus(
                data_dir, encoder, model_path, words, overlap, batch_size, precision, use_cache, show_progress
            )
            if index_factory.replace(" ", "") != "Flat":
                from contriever.retrieval.index import DenseIndex

                index = DenseIndex.build(
                    index.embeddings(), index.ids, index_factory, show_progress=show_progress
                )
        corpus_seconds = time.perf_counter() - encoding
        cache_root = cache_dir() if use_cache else None
        if cache_root is not None:  # queries searched before with this model are not encoded again
            # the folder's fingerprint is this encoder's when the corpus was just encoded with it or
            # a named model was checked against it; else (the folder's own model, loaded from where
            # the folder says) it is taken from the weights
            checked = index_path is None or model_path is not None
            fingerprint = index.metadata.get("model_fingerprint") if checked else None
            encoder = CachedQueryEncoder(encoder, cache_root, fingerprint=fingerprint)
        passage_depth = PASSAGE_DEPTH if words else 0
        meta.update(words=words, overlap=overlap, scoring="max over passages" if words else "truncation")
        if system == "dense":
            run = dense_retrieve(
                encoder,
                None,
                queries,
                k,
                batch_size,
                index_factory,
                index=index,
                show_progress=show_progress,
                timings=timings,
                precision=precision,
                passage_depth=passage_depth,
            )
        else:
            from contriever.retrieval.bm25 import DEFAULTS

            run = hybrid_retrieve(
                encoder,
                corpus,
                queries,
                k,
                fusion="rrf",
                batch_size=batch_size,
                index_factory=index_factory,
                show_progress=show_progress,
                timings=timings,
                precision=precision,
                index=index,
                passage_depth=passage_depth,
            )
            meta.update(fusion="rrf", rrf_k=60, bm25=dict(DEFAULTS))
        timings["encode_corpus_s"] = corpus_seconds  # the retrieval calls saw a ready index
        meta["queries_from_cache"] = isinstance(encoder, CachedQueryEncoder) and encoder.hits > 0
        if temporary is not None:
            temporary.cleanup()
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
