"""Exact search over an index folder's memory-mapped fp16 shards: queries/s, and the share of the
machine's matrix-product rate it reaches.

    python benchmarks/exact_search.py --index IDX --queries Q.npy [--n 1000] [--k 100] \\
        [--before OLD_SHARDS.py] [--repeat 2] [--output results.json]

Exact search costs `2 x queries x vectors x dim` FLOP; the report divides that by the time taken
and by the fp32 matrix-product rate measured in the same run before each repeat (`matmul_peak.py`'s
MiniLM shapes and the search's own shape, queries x dim x 16,384, the larger), so each repeat's
fraction of the peak is taken under the same load; `--calls N` splits the queries into N calls, as
`DenseRetriever` does with blocks of queries (a conversion per call would show there). The shards are read once before
timing, so the page cache holds them (what a server answering repeatedly sees). `--before` loads
another version of `contriever/retrieval/shards.py` (e.g. `git show OLD:src/contriever/retrieval/shards.py
> old.py`) and times both in turn in this process, with their results compared row by row.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from contriever.retrieval.faiss_calls import set_faiss_threads
from contriever.retrieval.shards import open_index


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("shards_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def matmul_peak(queries: int, dim: int) -> float:
    """fp32 GFLOP/s of this machine's best product: MiniLM's shapes (`matmul_peak.py`) or the search's."""
    import sys

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from matmul_peak import SHAPES, gflops

    shapes = [*SHAPES, (queries, dim, 16384)]
    return max(gflops(m, k, n, torch.float32, 1.0) for m, k, n in shapes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", required=True)
    parser.add_argument("--queries", required=True, help=".npy of query vectors [n, dim]")
    parser.add_argument("--n", type=int, default=1000, help="queries searched in one call")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--before", help="another shards.py to time against this one")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--calls", type=int, default=1, help="split the queries into this many calls")
    parser.add_argument("--output")
    args = parser.parse_args()
    threads = set_faiss_threads()
    queries = np.load(args.queries).astype(np.float32)[: args.n]
    versions = {"now": open_index(args.index)}
    if args.before:
        versions["before"] = load_module(args.before).open_index(args.index)
    index = versions["now"]
    for number in range(index.num_shards):  # into the page cache
        np.asarray(index.vectors(number)).sum()
    flop = 2.0 * len(queries) * len(index) * index.dim
    rows: dict[str, dict] = {}
    fractions: dict[str, list[float]] = {name: [] for name in versions}
    peaks = []
    blocks = np.array_split(queries, args.calls)
    for _ in range(args.repeat):
        peak = matmul_peak(len(queries), index.dim)
        peaks.append(peak)
        for name, version in versions.items():
            started = time.perf_counter()
            found = np.concatenate([version.search_rows(block, args.k)[1] for block in blocks])
            seconds = time.perf_counter() - started
            fractions[name].append(flop / seconds / 1e9 / peak)
            best = rows.get(name)
            if best is None or seconds < best["seconds"]:
                rows[name] = {
                    "seconds": round(seconds, 2),
                    "qps": round(len(queries) / seconds, 1),
                    "gflops": round(flop / seconds / 1e9, 1),
                    "found": found,
                }
            print(
                f"{name}: {seconds:.1f} s, {len(queries) / seconds:.1f} q/s, {flop / seconds / 1e9:.1f} GFLOP/s, "
                f"{flop / seconds / 1e9 / peak:.2f} of the fp32 matmul peak {peak:.1f}",
                flush=True,
            )
    for name, values in fractions.items():
        rows[name]["of_peak_median"] = round(float(np.median(values)), 3)
        rows[name]["of_peak_range"] = [round(min(values), 3), round(max(values), 3)]
    if "before" in rows:
        same = float((rows["before"]["found"] == rows["now"]["found"]).mean())
        print(
            f"identical rows: {same:.4f}; speed-up {rows['before']['seconds'] / rows['now']['seconds']:.2f}x"
        )
    summary = {
        "vectors": len(index),
        "dim": index.dim,
        "queries": len(queries),
        "k": args.k,
        "faiss_threads": threads,
        "calls": args.calls,
        "matmul_peak_gflops": [round(p, 1) for p in peaks],
        **{name: {key: value for key, value in row.items() if key != "found"} for name, row in rows.items()},
    }
    print(json.dumps(summary))
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
