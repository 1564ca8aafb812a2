"""What `contriever verify` costs on a real index: SciFact's 5,183 documents encoded into an index folder.

    python benchmarks/verify_cost.py --data ../shared/data/scifact --output benchmarks/results/verify_cost_scifact.json

The index is built by `contriever index` with a random 1-layer model as wide as the default model
(384 dimensions, seed 0; `--model default` uses the real one, about 10 minutes on CPU B), so the
folder has the default model's size: fp16 shards, ids, the passage store. Then times the full check
(`contriever verify IDX` as a command, and `verify_folder` in-process, best of 5, page cache warm)
against opening the index and searching one query (`contriever search`), each as a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument(
        "--model", default="random384", help="'random384' (fast) or a model for `contriever index`"
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    from contriever.cli.main import main as contriever
    from contriever.cli.verify import verify_folder
    from contriever.model.encoder import Encoder

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as root:
        model = args.model
        if model == "random384":
            model = str(
                Encoder.from_scratch(
                    hidden_size=384,
                    num_hidden_layers=1,
                    num_attention_heads=6,
                    intermediate_size=1536,
                    seed=0,
                ).save(Path(root) / "model")
            )
        index = Path(root) / "idx"
        started = time.perf_counter()
        argv = ["index", "--data", str(args.data), "--model", model, "--output", str(index)]
        assert contriever([*argv, "--no-cache", "--quiet", "--max-length", "256"]) == 0
        index_s = time.perf_counter() - started
        folder_bytes = sum(p.stat().st_size for p in index.rglob("*") if p.is_file())
        in_process = []
        for _ in range(5):
            started = time.perf_counter()
            kind, problems, _, files = verify_folder(index)
            in_process.append(time.perf_counter() - started)
            assert kind == "index" and not problems, problems
        command = [sys.executable, "-m", "contriever.cli.main"]
        verify_s = min(wall([*command, "verify", str(index)]) for _ in range(3))
        search_s = min(wall([*command, "search", "--index", str(index), "scurvy"]) for _ in range(3))
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "model": args.model,
        "folder_bytes": folder_bytes,
        "files_checked": files,
        "index_s": round(index_s, 1),
        "verify_in_process_best_s": round(min(in_process), 4),
        "verify_command_s": round(verify_s, 2),
        "search_one_query_command_s": round(search_s, 2),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
