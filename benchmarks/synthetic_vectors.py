"""Vectors for benchmarks/index_bench.py at sizes no corpus here can be encoded to on a CPU.

Two recipes, both L2-normalized and written as an index folder (fp16 shards) plus query vectors:

    # 1,000 Gaussian centres in 384 dims, points = centre + N(0, (0.6/sqrt(384))^2) per component;
    # queries drawn from the same mixture (the 100,000-vector row of benchmarks/README.md)
    python benchmarks/synthetic_vectors.py clusters --n 100000 --output /tmp/i8b/syn

    # real passage vectors, each repeated with noise: row i is normalize(v[i mod m] + noise) where v
    # are the m vectors of a real index (e.g. SciFact + Wikipedia encoded by the default model) and
    # noise is N(0, (sigma/sqrt(dim))^2) per component; queries are real encoded queries (.npy)
    python benchmarks/synthetic_vectors.py perturbed --from-index IDX --n 1000000 --sigma 0.3 \
        --queries real-queries.npy --output /tmp/million

The second keeps what PQ and IVF feel on real embeddings (their low-rank, uneven spread) at any size;
the first is the worst case for PQ (full-rank noise). Seed 0.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from contriever.retrieval.shards import open_index, write_manifest, write_shard

SHARD_ROWS = 100_000


def normalized(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clusters(args, rng) -> tuple[Callable[[int, int], np.ndarray], np.ndarray, int]:
    d, c = 384, 1000
    centres = rng.normal(size=(c, d)).astype(np.float32) / np.sqrt(d)

    def draw(start: int, m: int) -> np.ndarray:
        noise = (0.6 / np.sqrt(d)) * rng.normal(size=(m, d)).astype(np.float32)
        return normalized(centres[rng.integers(0, c, m)] + noise)

    return draw, draw(0, 1000), d


def perturbed(args, rng) -> tuple[Callable[[int, int], np.ndarray], np.ndarray, int]:
    source = open_index(args.from_index)
    real = np.concatenate([v.astype(np.float32) for _, v in source.iter_shards()])
    d = real.shape[1]

    def draw(start: int, m: int) -> np.ndarray:
        rows = real[np.arange(start, start + m) % len(real)]
        return normalized(rows + (args.sigma / np.sqrt(d)) * rng.normal(size=(m, d)).astype(np.float32))

    return draw, np.load(args.queries).astype(np.float32), d


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", choices=("clusters", "perturbed"))
    parser.add_argument("--n", type=int, default=100_000, help="vectors to index")
    parser.add_argument("--output", required=True, help="folder: idx/ (index folder) and queries.npy")
    parser.add_argument("--from-index", help="perturbed: the index folder of real vectors")
    parser.add_argument("--sigma", type=float, default=0.3, help="perturbed: noise scale (relative)")
    parser.add_argument("--queries", help="perturbed: .npy of real query vectors")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    draw, queries, d = (clusters if args.recipe == "clusters" else perturbed)(args, rng)
    out = Path(args.output)
    index = out / "idx"
    index.mkdir(parents=True, exist_ok=True)
    np.save(out / "queries.npy", queries)
    records = []
    for number, start in enumerate(range(0, args.n, SHARD_ROWS)):
        m = min(SHARD_ROWS, args.n - start)
        ids = [f"s{i}" for i in range(start, start + m)]
        records.append(write_shard(index, number, ids, draw(start, m).astype(np.float16)))
    write_manifest(index, records, dim=d, dtype="float16", metadata={"synthetic": vars(args)})
    print(f"{args.n} x {d} vectors in {index}; {len(queries)} queries in {out / 'queries.npy'}")


if __name__ == "__main__":
    main()
