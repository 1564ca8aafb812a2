"""Exact search over an index folder's memory-mapped fp16 shards: queries/s, and the share of the
machine's matrix-product rate it reaches.

    python benchmarks/exact_search.py --index IDX --queries Q.npy [--n 1000] [--k 100] \\
        [--precisions auto,fp32] [--before OLD_SHARDS.py [--before-exact OLD_EXACT.py]] [--repeat 2] \\
        [--output results.json]

Exact search costs `2 x queries x vectors x dim` FLOP; the report divides that by the time taken
and by the machine's best matrix-product rate measured in the same run before each repeat (fp32,
and bf16 where the CPU has it natively; `matmul_peak.py`'s MiniLM shapes and the search's own shape,
queries x dim x 16,384, the best), so each repeat's fraction of the peak is taken under the same
load. `--precisions` times this version's candidate pass in each precision named (`auto`: what
search uses here, the pass it chose shown after the name), their rows compared with the first's;
`--calls N` splits the queries into N calls, as `DenseRetriever` does with blocks of queries (a
conversion per call would show there). The shards are read once before timing, so the page cache
holds them, and each version searches the queries once untimed first (what a server answering
repeatedly sees: the chunks converted once per index are kept, "auto" has chosen its pass).
`--before` loads another version of `contriever/retrieval/shards.py` (e.g. `git show
OLD:src/contriever/retrieval/shards.py > old.py`) and times both in turn in this process, with
their results compared row by row; `--before-exact` gives that version its own
`contriever/retrieval/exact.py` too (the kernel the search calls), swapped in while it runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from contriever.retrieval.faiss_calls import set_faiss_threads
from contriever.retrieval.shards import open_index, search_precision


def load_module(path: str, name: str = "shards_before"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_exact_module(search, module):
    """`search` with `contriever.retrieval.exact` replaced by `module` while it runs (shards.py
    imports the kernel at call time)."""

    def run(*args, **kwargs):
        saved = sys.modules["contriever.retrieval.exact"]
        sys.modules["contriever.retrieval.exact"] = module
        try:
            return search(*args, **kwargs)
        finally:
            sys.modules["contriever.retrieval.exact"] = saved

    return run


def matmul_peak(queries: int, dim: int, dtype) -> float:
    """GFLOP/s of this machine's best product in `dtype`: MiniLM's shapes (`matmul_peak.py`) or the search's."""
    sys.path.insert(0, str(Path(__file__).parent))
    from matmul_peak import SHAPES, gflops

    shapes = [*SHAPES, (queries, dim, 16384)]
    return max(gflops(m, k, n, dtype, 1.0) for m, k, n in shapes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", required=True)
    parser.add_argument("--queries", required=True, help=".npy of query vectors [n, dim]")
    parser.add_argument("--n", type=int, default=1000, help="queries searched in one call")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--before", help="another shards.py to time against this one")
    parser.add_argument("--before-exact", help="the exact.py that --before's version calls")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--calls", type=int, default=1, help="split the queries into this many calls")
    parser.add_argument(
        "--precisions", default="auto", help="candidate passes of this version to time, e.g. auto,fp32,bf16"
    )
    parser.add_argument("--output")
    args = parser.parse_args()
    import torch

    threads = set_faiss_threads()
    queries = np.load(args.queries).astype(np.float32)[: args.n]
    index = open_index(args.index)
    versions = {}
    for precision in args.precisions.split(","):
        versions[f"now-{precision}"] = partial(open_index(args.index).search_rows, precision=precision)
    if args.before:
        versions["before"] = load_module(args.before).open_index(args.index).search_rows
        if args.before_exact:
            versions["before"] = with_exact_module(
                versions["before"], load_module(args.before_exact, "exact_before")
            )
    for number in range(index.num_shards):  # into the page cache
        np.asarray(index.vectors(number)).sum()
    named = {}
    for name, search in versions.items():  # untimed: what a search does once per index
        search(queries, args.k)  # (its kept chunks; "auto"'s choice of pass, made on these queries)
        chosen = getattr(getattr(getattr(search, "func", search), "__self__", None), "_pass_choices", {})
        named[f"{name}={chosen[args.k]}" if args.k in chosen else name] = search
    versions = named
    flop = 2.0 * len(queries) * len(index) * index.dim
    rows: dict[str, dict] = {}
    fractions: dict[str, list[float]] = {name: [] for name in versions}
    peaks = []
    blocks = np.array_split(queries, args.calls)
    bf16_native = search_precision("auto") == "bf16"
    for _ in range(args.repeat):
        fp32_peak = matmul_peak(len(queries), index.dim, torch.float32)
        bf16_peak = matmul_peak(len(queries), index.dim, torch.bfloat16) if bf16_native else 0.0
        peak = max(fp32_peak, bf16_peak)  # the machine's best product rate
        peaks.append({"fp32": round(fp32_peak, 1), "bf16": round(bf16_peak, 1)})
        for name, search in versions.items():
            started = time.perf_counter()
            found = np.concatenate([search(block, args.k)[1] for block in blocks])
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
                f"{flop / seconds / 1e9 / peak:.2f} of the matmul peak {peak:.1f} "
                f"(fp32 {fp32_peak:.0f}, bf16 {bf16_peak:.0f}{'' if bf16_native else ': not native'})",
                flush=True,
            )
    for name, values in fractions.items():
        rows[name]["of_peak_median"] = round(float(np.median(values)), 3)
        rows[name]["of_peak_range"] = [round(min(values), 3), round(max(values), 3)]
    first = next(iter(rows))
    for name in list(rows)[1:]:
        same = float((rows[name]["found"] == rows[first]["found"]).mean())
        rows[name]["identical_rows_to_" + first] = same
        print(
            f"{name}: identical rows to {first}: {same:.4f}; {first} is {rows[name]['seconds'] / rows[first]['seconds']:.2f}x as fast"
        )
    summary = {
        "vectors": len(index),
        "dim": index.dim,
        "queries": len(queries),
        "k": args.k,
        "faiss_threads": threads,
        "calls": args.calls,
        "matmul_peak_gflops": peaks,
        **{name: {key: value for key, value in row.items() if key != "found"} for name, row in rows.items()},
    }
    print(json.dumps(summary))
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
