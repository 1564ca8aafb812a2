"""Synthetic clustered vectors for benchmarks/index_bench.py: 1,000 Gaussian centres in 384 dims, points = centre + N(0, 0.6^2) noise
per component, L2-normalized; 100,000 indexed + 1,000 held-out queries from the same mixture; seed 0."""

import numpy as np

from contriever.retrieval.index import DenseIndex

rng = np.random.default_rng(0)
d, n, c = 384, 100_000, 1000
centres = rng.normal(size=(c, d)).astype(np.float32) / np.sqrt(d)


def draw(m):
    x = centres[rng.integers(0, c, m)] + (0.6 / np.sqrt(d)) * rng.normal(size=(m, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


x = draw(n)
q = draw(1000)
np.save("/tmp/i8b/syn/queries.npy", q)
DenseIndex.build(x, [f"s{i}" for i in range(n)], show_progress=False).save(
    "/tmp/i8b/syn/idx", shard_rows=25_000
)
