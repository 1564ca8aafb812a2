"""How fast each candidate checksum is, against the time of writing and reading the same bytes.

    python benchmarks/checksum_speed.py --mib 512 --output benchmarks/results/checksum_speed.json

Hashes one buffer of random bytes (in memory) with XXH3-128 (`xxhash`, what contriever records),
BLAKE3 (`blake3`) and sha256 (`hashlib`), best of `--repeats`; then writes the buffer through
`contriever.io.atomic_write` (flush, fsync, rename: what every writer of ours does) and reads it back
(from the page cache, the usual case right after a write; the figure for a cold disk is lower still,
which only makes the hash cheaper in comparison). Prints and saves GiB/s for each.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def best_seconds(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import blake3
    import xxhash

    from contriever.io import atomic_write, file_checksum

    data = os.urandom(args.mib << 20)
    gib = len(data) / 2**30
    hashes = {
        "xxh3_128": lambda: xxhash.xxh3_128(data).hexdigest(),
        "blake3 (1 thread)": lambda: blake3.blake3(data).hexdigest(),
        "sha256": lambda: hashlib.sha256(data).hexdigest(),
    }
    rates = {name: gib / best_seconds(function, args.repeats) for name, function in hashes.items()}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as folder:
        path = Path(folder) / "data.bin"

        def write():
            with atomic_write(path, "wb") as handle:
                for start in range(0, len(data), 64 << 20):
                    handle.write(data[start : start + (64 << 20)])

        def read():
            with open(path, "rb") as handle:
                while handle.read(8 << 20):
                    pass

        write_s = best_seconds(write, args.repeats)  # includes hashing as written (xxh3)
        read_s = best_seconds(read, args.repeats)
        read_and_hash_s = best_seconds(lambda: file_checksum(path), args.repeats)
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "bytes": len(data),
        "hash_gib_s": {name: round(rate, 2) for name, rate in rates.items()},
        "atomic_write_gib_s": round(gib / write_s, 2),
        "read_page_cache_gib_s": round(gib / read_s, 2),
        "read_and_xxh3_gib_s": round(gib / read_and_hash_s, 2),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
