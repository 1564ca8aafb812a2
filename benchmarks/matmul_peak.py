"""The machine's own ceiling: matrix products of MiniLM's shapes in fp32 and bf16, in GFLOP/s.

    python benchmarks/matmul_peak.py

Encoding and training throughput are compared against these figures: a transformer can go no faster
than its matrix products. Where bf16 is far slower than fp32 the CPU has no native bf16 instructions
and `--precision auto` stays in fp32.
"""

from __future__ import annotations

import platform
import time

import torch

SHAPES = [(8192, 384, 1536), (8192, 1536, 384), (8192, 384, 384)]  # tokens x hidden x feed-forward


def gflops(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Products repeated for about `seconds` after a timed warm-up (slow dtypes get few repeats)."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    start = time.perf_counter()
    a @ b
    repeats = max(1, min(50, int(seconds / (time.perf_counter() - start))))
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"cpu capability: {torch.backends.cpu.get_cpu_capability()}")
    print("| shape (m x k x n) | fp32 GFLOP/s | bf16 GFLOP/s |")
    print("|---|---:|---:|")
    for m, k, n in SHAPES:
        print(
            f"| {m} x {k} x {n} | {gflops(m, k, n, torch.float32):.0f} | {gflops(m, k, n, torch.bfloat16):.1f} |"
        )


if __name__ == "__main__":
    main()
