"""What this machine lets the process use, asked once in one place (threads for FAISS, bm25s, workers),
and handing freed memory back to it."""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup (v2) CPU quota if there is one."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


@functools.cache
def _libc():
    try:
        return ctypes.CDLL("libc.so.6")  # glibc; elsewhere there is nothing to trim
    except OSError:
        return None


def release_freed_memory() -> None:
    """Give memory the process has freed back to the operating system (glibc's `malloc_trim`).

    glibc keeps freed blocks of many sizes (token lists, batches of every length and shape) in its
    arenas, one per thread that allocated; without a trim, a long encoding run or a busy server
    creeps up in resident memory with these fragments, not with data. A few milliseconds a call:
    call it between units of work (a shard, a second of serving), not in a hot loop."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20


def map_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Have glibc map every block of `threshold` bytes or more from the OS and unmap it when freed.

    By default glibc raises this threshold to the largest block freed so far (up to 32 MiB): after a
    few batches, tensors of every new batch shape are carved from its heaps instead, and the holes
    they leave are too scattered to reuse or to trim. Measured on `contriever index` (tiny model,
    shards of 2,000): bytes in use stayed at 140 MiB while the heap's free bytes grew 127, 189, 233,
    265 MiB over four shards, all of it resident; with the threshold fixed at 1 MiB the heap stayed at
    170 MiB with 28 MiB free. Setting the threshold also stops the raising. For the whole process;
    True where it was set (glibc)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
