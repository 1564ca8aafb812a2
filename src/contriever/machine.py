"""What this machine lets the process use, asked once in one place (threads for FAISS, bm25s, workers)."""

from __future__ import annotations

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
