"""A burst beyond `contriever serve`'s queue: 429s with Retry-After, never a timeout; memory flat;
p99 back to its unloaded value afterwards.

    python benchmarks/serve_burst.py --data ../shared/data/scifact --max-queue 64 --burst-clients 256 \
        --output benchmarks/results/serve_burst.json

Starts `contriever serve --model default --max-queue N` on 127.0.0.1 (a free port), then, from
`contriever.serving.loadtest` (loopback only, bounded in count and time):
1. before: `--calm-clients` clients send `--calm` embeddings requests (SciFact queries), p50/p99;
2. burst: `--burst-clients` clients send `--burst` requests as fast as answers come back, with a
   `--timeout` per request: counts of 200, 429 and no answer, and the server's resident memory;
3. after: the calm load again, p50/p99.
Prints one JSON line per phase and writes them to `--output`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from contriever.data.beir import load_queries
from contriever.serving.loadtest import Request, ServerProcess, run_load


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--calm-clients", type=int, default=4)
    parser.add_argument("--calm", type=int, default=200)
    parser.add_argument("--burst-clients", type=int, default=256)
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--output", default="benchmarks/results/serve_burst.json")
    args = parser.parse_args()
    queries = list(load_queries(Path(args.data)).values())
    requests = [Request("POST", "/v1/embeddings", body={"input": query}) for query in queries]
    phases = []
    with ServerProcess(["--model", "default", "--max-queue", str(args.max_queue)]) as server:
        run_load(server.url, requests[:50], clients=args.calm_clients, total=50)  # warm-up
        for phase, clients, total in (
            ("before", args.calm_clients, args.calm),
            ("burst", args.burst_clients, args.burst),
            ("after", args.calm_clients, args.calm),
        ):
            result = run_load(
                server.url,
                requests,
                clients=clients,
                total=total,
                expect=(200, 429) if phase == "burst" else (200,),
                server_pid=server.pid,
                timeout=args.timeout,
                max_seconds=900,
            )
            phases.append({"phase": phase, "clients": clients, **result.summary()})
            print(json.dumps(phases[-1]), flush=True)
        phases.append({"phase": "exit on SIGTERM", "status": server.stop()})
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"args": vars(args), "phases": phases}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
