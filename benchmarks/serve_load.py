"""Load test of `contriever serve` on the loopback interface: dynamic batching on, then off.

    python benchmarks/serve_load.py --index outputs/serve/scifact-index --data ../shared/data/scifact \
        --clients 32 --queries 5000

For each setting it starts `contriever serve` on 127.0.0.1 (a free port) as a child process, sends
`--warmup` requests at full concurrency, then `--queries` requests from `--clients` concurrent keep-alive connections
(the dataset's queries in turn, `GET /search?mode=...&k=10`, or `POST /v1/embeddings` with
`--mode embeddings`), and stops by itself. It reports queries/s, p50/p95/p99 latency, errors (any
status but 200 or no answer), the server's resident memory at the start and end of the run (and its
peak), the mean number of texts per dynamic batch (from the server's /metrics), and the server's
exit status after SIGTERM. Nothing is sent anywhere but 127.0.0.1 (`contriever.serving.loadtest`).
Results: printed as a table, and written as JSON to `--output`.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
import urllib.request
from pathlib import Path

from contriever.data.beir import load_queries
from contriever.serving.loadtest import Request, ServerProcess, run_load


def _metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()  # noqa: S310 (loopback)
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _requests(queries: list[str], mode: str, k: int) -> list[Request]:
    if mode == "embeddings":
        return [Request("POST", "/v1/embeddings", body={"input": q}) for q in queries]
    return [Request("GET", "/search", {"q": q, "mode": mode, "k": k}) for q in queries]


def measure(args, batching: bool, requests: list[Request]) -> dict:
    server_args = ["--index", args.index, "--threads", str(args.threads)]
    server_args += ["--data", args.data] if args.data else []
    server_args += ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
    if not batching:
        server_args.append("--no-batching")
    started = time.perf_counter()
    with ServerProcess(server_args) as server:
        startup = time.perf_counter() - started
        # warm-up at full concurrency, so the largest batches (and their memory) are reached before
        # the measured run starts and "memory flat" compares like with like
        warm = run_load(server.url, requests[-500:], clients=args.clients, total=args.warmup)
        if warm.errors:
            raise SystemExit(f"warm-up failed: {warm.failures[:3]}")
        batches0 = _metric(server.url, "contriever_encode_batch_size_count")
        texts0 = _metric(server.url, "contriever_encode_batch_size_sum")
        result = run_load(
            server.url,
            requests,
            clients=args.clients,
            total=args.queries,
            max_seconds=args.max_seconds,
            server_pid=server.pid,
        )
        batches = _metric(server.url, "contriever_encode_batch_size_count") - batches0
        texts = _metric(server.url, "contriever_encode_batch_size_sum") - texts0
        status = server.stop(signal.SIGTERM)
    summary = result.summary()
    summary.update(
        batching=batching,
        clients=args.clients,
        mean_batch=round(texts / batches, 2) if batches else None,
        forward_passes=int(batches),
        exit_status=status,
        startup_s=round(startup, 1),
        failures=result.failures[:5],
        rss_by_tenth_mb=[round(result.rss_mb[int(i * (len(result.rss_mb) - 1) / 10)], 1) for i in range(11)]
        if result.rss_mb
        else [],
    )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", required=True)
    parser.add_argument(
        "--data", help="BEIR folder: its queries are sent, its corpus gives snippets and BM25"
    )
    parser.add_argument("--mode", default="dense", choices=("dense", "bm25", "hybrid", "embeddings"))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--max-seconds", type=float, default=900, help="stop sending after this long")
    parser.add_argument("--warmup", type=int, default=320, help="requests sent before the measured run")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", default="on,off", help="batching settings to run, in order")
    parser.add_argument("--output", help="JSON file for the results")
    args = parser.parse_args()

    queries = list(load_queries(Path(args.data)).values()) if args.data else ["what causes scurvy"] * 100
    requests = _requests(queries, args.mode, args.k)
    runs = []
    for setting in args.settings.split(","):
        runs.append(measure(args, setting.strip() == "on", requests))
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(f"\n{args.mode}, {args.clients} clients, {args.queries} requests, k={args.k}\n")
    print(
        "| dynamic batching | qps | p50 ms | p95 ms | p99 ms | errors | texts per batch | RSS start -> end (max) MB | exit |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for run in runs:
        print(
            f"| {'on' if run['batching'] else 'off'} | {run['qps']} | {run['p50_ms']} | {run['p95_ms']} | "
            f"{run['p99_ms']} | {run['errors']} | {run['mean_batch']} | {run['rss_start_mb']} -> "
            f"{run['rss_end_mb']} ({run['rss_max_mb']}) | {run['exit_status']} |"
        )
    if len(runs) == 2 and runs[1]["qps"]:
        print(f"\nthroughput ratio on/off: {runs[0]['qps'] / runs[1]['qps']:.2f}x")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2) + "\n")
    return 0 if all(run["errors"] == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
