"""A bounded load generator for a `contriever serve` on this machine (loopback only).

`run_load(url, requests, clients=32, total=5000)` opens `clients` keep-alive connections (one thread
each, standard library `http.client`), sends `total` requests drawn in turn from `requests`, and
stops by itself: after `total` requests or `max_seconds`, whichever comes first. It returns queries/s,
latency percentiles, the status codes seen, and the server's resident memory sampled while it ran
(when given the server's pid). It refuses any address that is not a loopback address: it is for
measuring a server on this machine, never for sending traffic elsewhere.

`ServerProcess` starts `contriever serve ... --host 127.0.0.1 --port 0` as a child process and waits
until it is ready. Used by `benchmarks/serve_load.py` (32 clients, 5,000 queries, batching on and off) and by the test
suite (a few clients, a tiny model, seconds).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit


@dataclass
class Request:
    method: str
    path: str
    params: dict | None = None
    body: dict | None = None

    def target(self) -> str:
        return f"{self.path}?{urlencode(self.params)}" if self.params else self.path


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: Counter
    latencies_ms: list[float]
    rss_mb: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        """Requests answered with an unexpected status or not answered at all."""
        return len(self.failures)

    @property
    def qps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "qps": round(self.qps, 1),
            "p50_ms": round(self.percentile(50), 1),
            "p95_ms": round(self.percentile(95), 1),
            "p99_ms": round(self.percentile(99), 1),
            "errors": self.errors,
            "statuses": {str(code): count for code, count in sorted(self.statuses.items())},
            "rss_start_mb": round(self.rss_mb[0], 1) if self.rss_mb else None,
            "rss_end_mb": round(self.rss_mb[-1], 1) if self.rss_mb else None,
            "rss_max_mb": round(max(self.rss_mb), 1) if self.rss_mb else None,
        }


def require_loopback(url: str) -> tuple[str, int]:
    """(host, port) of `url`, or ValueError if the host resolves to anything but loopback."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url}: expected http://HOST:PORT")
    port = parts.port or 80
    addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)}
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ValueError(f"{url}: the load generator only talks to this machine (loopback), not {addresses}")
    return parts.hostname, port


def rss_mb(pid: int) -> float | None:
    """Resident memory of process `pid` in MB (Linux /proc), None where unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_load(
    url: str,
    requests: list[Request],
    *,
    clients: int = 32,
    total: int = 5000,
    max_seconds: float = 600.0,
    expect: tuple[int, ...] = (200,),
    server_pid: int | None = None,
    timeout: float = 60.0,
) -> LoadResult:
    """Send `total` requests (cycling through `requests`) over `clients` concurrent connections."""
    if not requests:
        raise ValueError("no requests to send")
    host, port = require_loopback(url)
    tally = _Tally(requests, total, time.monotonic() + max_seconds, expect)
    threads = [
        threading.Thread(target=_client, args=(tally, host, port, timeout), name=f"load-client-{i}")
        for i in range(clients)
    ]
    with _MemorySampler(server_pid) as memory:
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
    latencies = tally.latencies
    return LoadResult(len(latencies), seconds, tally.statuses, latencies, memory.samples, tally.failures)


class _Tally:
    """What the client threads of one `run_load` share: which request is next, and what came back."""

    def __init__(self, requests: list[Request], total: int, stop_at: float, expect: tuple[int, ...]):
        self.requests, self.total, self.stop_at, self.expect = requests, total, stop_at, expect
        self.lock = threading.Lock()
        self.sent = 0
        self.statuses: Counter = Counter()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def take(self) -> Request | None:
        """The next request to send, or None once `total` are sent or the time is up."""
        with self.lock:
            if self.sent >= self.total or time.monotonic() > self.stop_at:
                return None
            self.sent += 1
            return self.requests[(self.sent - 1) % len(self.requests)]

    def record(self, request: Request, status: int | None, elapsed_ms: float, problem: str | None) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.latencies.append(elapsed_ms)
            if status not in self.expect:
                self.failures.append(problem or f"{request.method} {request.path}: {status}")


def _send(connection: http.client.HTTPConnection, request: Request) -> int:
    """Send `request` on `connection` and read the whole answer; its status."""
    body = json.dumps(request.body).encode() if request.body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection.request(request.method, request.target(), body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


def _client(tally: _Tally, host: str, port: int, timeout: float) -> None:
    """One keep-alive connection sending the tally's requests until none is left; a failed request
    opens a new connection, and a refused one (the server has stopped) ends this client."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        while (request := tally.take()) is not None:
            start = time.perf_counter()
            status = problem = None
            try:
                status = _send(connection, request)
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
                problem = f"{request.method} {request.path}: {type(error).__name__}: {error}"
                gone = isinstance(error, ConnectionRefusedError)
            tally.record(request, status, (time.perf_counter() - start) * 1000, problem)
            if status is None and gone:
                break
    finally:
        connection.close()


class _MemorySampler:
    """The resident memory of process `pid`, sampled every half second while in the `with` block
    and once more at its end (nothing without a pid)."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.samples: list[float] = []
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True) if pid else None

    def _sample(self) -> None:
        while self._running.is_set():
            value = rss_mb(self.pid)
            if value is not None:
                self.samples.append(value)
            self._running.wait(0.5)

    def __enter__(self) -> _MemorySampler:
        if self._thread:
            self._running.set()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._running.clear()
        if self._thread:
            self._thread.join()
            final = rss_mb(self.pid)
            if final is not None:
                self.samples.append(final)


def is_healthy(url: str) -> bool:
    """Whether the server at `url` answers `GET /health` with 200 (any error or refusal: no)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


class ServerProcess:
    """`contriever serve ARGS` on 127.0.0.1 and a free port, in a child process; a context manager.

    `url` is set once the server has printed its address; `stop(sig)` sends SIGTERM (or SIGINT, as
    Ctrl-C does) and returns the exit status; `log` holds what the server wrote to stderr.
    """

    def __init__(self, args: list[str], *, ready_timeout: float = 600.0):
        command = [
            sys.executable,
            "-m",
            "contriever.cli.main",
            "serve",
            *args,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.log: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + ready_timeout
        self._ready.wait(ready_timeout)
        while self.url is not None and not self._healthy() and time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        if self.url is None or self.process.poll() is not None:
            self.stop(signal.SIGKILL)
            raise RuntimeError("the server did not start:\n" + "".join(self.log[-30:]))

    def _healthy(self) -> bool:
        return is_healthy(self.url)

    def _read(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)
            found = re.search(r" on (http://\S+?)/?\s", line)
            if found and self.url is None:
                self.url = found.group(1)
                self._ready.set()
        self._ready.set()  # the process ended

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
