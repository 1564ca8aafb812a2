"""Choose an approximate index on your own vectors: recall against exact search, speed, memory, build time.

    python benchmarks/index_bench.py --index IDX --factory HNSW32 --factory "IVF1024,Flat" \\
        --factory "IVF1024,PQ48" --factory "OPQ48,IVF1024,PQ48" [--queries Q.npy | --sample-queries 1000] \\
        [--nprobe 32] [--ef-search 128] [--rerank 100] [--max-ram 2GiB] [--output results.json]

For each factory string it builds `IDX/ann/<name>/` (`contriever.retrieval.ann.build_ann`, shard by
shard, IVF lists on disk), then reports:

- recall@10 and recall@100: the share of the exact top k (`open_index(IDX).search_rows`, exact inner
  product over the fp16 shards) that the index returns in its top k, and what that gives up (1 - recall);
- queries/s at batch 1 (`--single` queries one at a time) and at batch 1,000;
- memory: `header` = `index.faiss` (centroids, PQ/OPQ tables; for HNSW the graph and its
  memory-mapped vectors), `lists` = the memory-mapped IVF lists; `ram` = both (what must stay in RAM
  or page cache for full speed; an IVF-Flat index answers with much less, reading nprobe lists per
  query from disk); `disk` = all files; and build time (training included).

`--rerank N` adds a row for each PQ/SQ index with its top N re-scored exactly from the fp16 shards
(`contriever search --ann NAME --rerank N`): N random reads of dim x 2 bytes a query from the shards,
which then want the page cache too for full speed (the `reads/query` column). Its speed here is
measured with the shards cached (exact search has just read them).

Queries: `--queries` an `.npy` of query vectors (e.g. your encoded queries), else `--sample-queries`
rows of the index itself drawn with `--seed` (each is then its own nearest neighbour, which every
index finds: recall is a little optimistic). `--max-ram` recommends the most accurate index whose
`ram` fits, as autofaiss does under a memory budget, and says what it gives up against exact search.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from contriever.retrieval.ann import AnnIndex, ann_name, build_ann, sample_rows
from contriever.retrieval.shards import open_index

UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30}


def parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512MiB, 4GiB)")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found.tolist(), truth.tolist())]))


def queries_per_second(index: AnnIndex, queries: np.ndarray, k: int, batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(queries), batch):
        index.search_rows(queries[start : start + batch], k, batch_size=batch)
    return len(queries) / (time.perf_counter() - started)


def bench(args: argparse.Namespace) -> list[dict]:
    exact = open_index(args.index)
    if args.queries:
        queries = np.load(args.queries).astype(np.float32)
    else:
        queries = sample_rows(exact, args.sample_queries, args.seed + 1)
    k = min(100, len(exact))
    started = time.perf_counter()
    _, truth = exact.search_rows(queries, k)
    exact_s = time.perf_counter() - started
    rows = [
        {
            "factory": "exact (fp16 shards)",
            "recall@10": 1.0,
            "recall@100": 1.0,
            "qps_batch_1000": round(len(queries) / exact_s, 1),
            "disk_bytes": sum(s.nbytes for _, s in exact.iter_shards()),
            "header_bytes": 0,
            "lists_bytes": 0,
            "ram_bytes": 0,
        }
    ]
    for factory in args.factory:
        name = ann_name(factory)
        if args.rebuild or not (Path(args.index) / "ann" / name / "ann.json").is_file():
            build_ann(args.index, factory, name=name, seed=args.seed, train_size=args.train_size)
        index = AnnIndex.load(args.index, name)
        index.set_params(
            nprobe=args.nprobe if "nprobe" in index.search_params else None,
            ef_search=args.ef_search if "efSearch" in index.search_params else None,
        )
        reranks = [None] + ([args.rerank] if args.rerank and re.search(r"PQ|SQ", factory) else [])
        for rerank in reranks:
            index.rerank = rerank
            rows.append(measure(index, queries, truth, k, args.single))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def measure(index: AnnIndex, queries: np.ndarray, truth: np.ndarray, k: int, single: int) -> dict:
    """One row of the table: `index` as its parameters are now set, against the exact top `k`."""
    _, found = index.search_rows(queries, k)
    sizes = index.sizes()
    params = dict(index.search_params) | ({"rerank": index.rerank} if index.rerank else {})
    return {
        "factory": index.factory,
        "params": params,
        "recall@10": round(recall_at(found, truth, min(10, k)), 4),
        "recall@100": round(recall_at(found, truth, k), 4),
        "qps_batch_1": round(queries_per_second(index, queries[:single], k, 1), 1),
        "qps_batch_1000": round(queries_per_second(index, queries, k, 1000), 1),
        "header_bytes": sizes["header"],
        "lists_bytes": sizes["lists"],
        "ram_bytes": sizes["header"] + sizes["lists"],
        "disk_bytes": sizes["header"] + sizes["lists"],
        "rerank_read_bytes_per_query": (index.rerank or 0) * index.dim * 2,
        "build_s": index.info["build_s"],
        "train_rows": index.info["train_rows"],
    }


def table(rows: list[dict], count: int, dim: int) -> str:
    lines = [
        f"{count:,} vectors x {dim}",
        "| index | params | recall@10 | recall@100 | gives up @10 | q/s batch 1 | q/s batch 1,000 "
        "| header MiB | lists MiB | reads/query KiB | build s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| `{row['factory']}` | {row.get('params', '')} | {row['recall@10']:.3f} | {row['recall@100']:.3f} "
            f"| {1 - row['recall@10']:.3f} | {row.get('qps_batch_1', '-')} | {row['qps_batch_1000']} "
            f"| {row.get('header_bytes', 0) / 2**20:.1f} | {row.get('lists_bytes', 0) / 2**20:.1f} "
            f"| {row.get('rerank_read_bytes_per_query', 0) / 2**10:.0f} | {row.get('build_s', '-')} |"
        )
    return "\n".join(lines)


def recommend(rows: list[dict], budget: int) -> str:
    fitting = [r for r in rows[1:] if r["ram_bytes"] <= budget]
    if not fitting:
        return f"no index fits in {budget / 2**20:.0f} MiB of RAM; exact search from the shards needs none"
    best = max(fitting, key=lambda r: (r["recall@10"], r["qps_batch_1000"]))
    return (
        f"under {budget / 2**20:.0f} MiB: {best['factory']} {best['params']}, recall@10 {best['recall@10']:.3f} "
        f"(gives up {1 - best['recall@10']:.3f} of the exact top 10; recall@100 {best['recall@100']:.3f}), "
        f"{best['qps_batch_1000']} queries/s at batch 1,000"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", required=True, help="index folder made by `contriever index`")
    parser.add_argument("--factory", action="append", required=True, help="FAISS factory string (repeat)")
    parser.add_argument("--queries", help=".npy of query vectors [n, dim]")
    parser.add_argument("--sample-queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument(
        "--rerank", type=int, help="also measure PQ/SQ indexes with their top N re-scored exactly"
    )
    parser.add_argument("--train-size", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rebuild", action="store_true", help="rebuild ANN indexes that already exist")
    parser.add_argument("--max-ram", type=parse_bytes, help="recommend under this RAM budget, e.g. 2GiB")
    parser.add_argument("--output", help="write the rows as JSON here")
    args = parser.parse_args()
    rows = bench(args)
    exact = open_index(args.index)
    print(table(rows, len(exact), exact.dim))
    if args.max_ram:
        print(recommend(rows, args.max_ram))
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
