"""What checksumming costs while writing a 1M-vector index, and what `contriever verify` costs on it.

    python benchmarks/checksum_write_cost.py --rows 1000000 --dim 384 --rounds 3 \
        --output benchmarks/results/checksum_write_cost.json

Writes `rows` synthetic fp16 vectors (seed 0; the same array every time) as an index folder through
the real shard writer (`contriever.retrieval.shards.write_shard`, 10,000 rows a shard as `contriever
index` writes them, then `index.json`), alternately with the checksum computed as the bytes are
written (as shipped) and without it (`contriever.io.new_hasher` replaced by a hasher that does
nothing), `rounds` times each, in one run. Reports each mode's median seconds and the overhead ratio (on a
shared machine the write's own noise is larger than the checksum), the share of each checksummed
write spent inside the hasher (timed directly),
then times the full check of the folder (`contriever.cli.verify.verify_folder`, page cache warm).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


class TimedHasher:
    """The real hasher, timing its `update` calls (the checksum's whole cost inside the write)."""

    seconds = 0.0

    def __init__(self, make):
        self._hasher = make()

    def update(self, data) -> None:
        started = time.perf_counter()
        self._hasher.update(data)
        TimedHasher.seconds += time.perf_counter() - started

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


class NoHasher:
    def update(self, data) -> None:
        pass

    def hexdigest(self) -> str:
        return "0" * 32


def write_index(folder: Path, vectors: np.ndarray, shard_rows: int) -> float:
    from contriever.retrieval.shards import write_manifest, write_shard

    folder.mkdir(parents=True)
    started = time.perf_counter()
    records = []
    for number, start in enumerate(range(0, len(vectors), shard_rows)):
        block = vectors[start : start + shard_rows]
        ids = [f"doc{row}" for row in range(start, start + len(block))]
        records.append(write_shard(folder, number, ids, block))
    write_manifest(folder, records, dim=vectors.shape[1])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    from contriever import io
    from contriever.cli.verify import verify_folder

    vectors = np.random.default_rng(0).standard_normal((args.rows, args.dim), dtype=np.float32)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)
    real_hasher = io.new_hasher
    seconds: dict[str, list[float]] = {"with_checksum": [], "without_checksum": []}
    root = Path(tempfile.mkdtemp(prefix="checksum-cost-", dir=os.environ.get("TMPDIR")))
    verify_s = None
    hash_seconds: list[float] = []  # share of each checksummed write spent hashing
    try:
        for round_number in range(args.rounds):
            for mode in ("with_checksum", "without_checksum"):
                TimedHasher.seconds = 0.0
                io.new_hasher = (lambda: TimedHasher(real_hasher)) if mode == "with_checksum" else NoHasher
                folder = root / f"{mode}-{round_number}"
                seconds[mode].append(write_index(folder, vectors, args.shard_rows))
                io.new_hasher = real_hasher
                if mode == "with_checksum":
                    hash_seconds.append(TimedHasher.seconds / seconds[mode][-1])
                if mode == "with_checksum" and verify_s is None:
                    started = time.perf_counter()
                    kind, problems, _, files = verify_folder(folder)
                    verify_s = time.perf_counter() - started
                    assert kind == "index" and not problems, problems
                shutil.rmtree(folder)
                print(mode, round_number, f"{seconds[mode][-1]:.2f} s", flush=True)
    finally:
        io.new_hasher = real_hasher
        shutil.rmtree(root, ignore_errors=True)
    with_s, without_s = (statistics.median(seconds[m]) for m in ("with_checksum", "without_checksum"))
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "rows": args.rows,
        "dim": args.dim,
        "shard_rows": args.shard_rows,
        "vector_bytes": int(vectors.nbytes),
        "seconds": {mode: [round(s, 3) for s in values] for mode, values in seconds.items()},
        "median_with_s": round(with_s, 3),
        "median_without_s": round(without_s, 3),
        "overhead": round(with_s / without_s - 1, 4),
        "hash_share_of_write": [round(share, 4) for share in hash_seconds],
        "verify_s": round(verify_s, 3),
        "verify_files": files,
    }
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
