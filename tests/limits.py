"""Run code in a child process under a file-size limit: how the tests make the disk "full".

`RLIMIT_FSIZE` makes any write past `limit` bytes fail (EFBIG) once SIGXFSZ is ignored, and kill
the process with SIGXFSZ while it is not: the code under test must ignore it itself (the CLI does).
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_with_file_size_limit(
    args: list[str], limit: int, *, cwd: str | os.PathLike | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `args` (argv after the Python interpreter) with every file capped at `limit` bytes."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # as a user's shell leaves it

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        preexec_fn=cap,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The CLI's stderr, asserted to be a single `error: ...` line without a traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not _is_progress(line)]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _is_progress(line: str) -> bool:
    """A tqdm status line: `desc: ... [elapsed<remaining, rate]`."""
    return re.search(r"\[\d+:\d\d", line) is not None
