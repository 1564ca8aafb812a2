"""Packed inference (`contriever.model.packed`) against the transformers forward, same model, same
texts, same run, interleaved round by round, as fractions of the machine's matmul peak of each round.

    python benchmarks/packed_inference.py --data ../shared/data/scifact --queries 400 --rounds 3

Workloads: SciFact queries in length-sorted passes of 8 and of 32 on one thread (what `serve` does
with a dynamic batch; `Encoder.encode`, which `index` and `evaluate` use, stays on the transformers
forward: benchmarks/README.md, "Packed inference"). Each in bf16 autocast (where the CPU has native
bf16: `--precision auto`) and in fp32. Reports texts/s, GFLOP/s of the real tokens' matrix products
(padding not counted: the work that had to be done), that as a fraction of `matmul_peak.py`'s best
shape in the same round, packed / transformers speed, the lowest cosine between the two paths'
vectors, and resident memory. Writes benchmarks/results/packed_inference.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bf16_shapes import resident_mib  # noqa: E402
from encode_throughput import cosine_rows, transformer_flops  # noqa: E402
from matmul_peak import SHAPES, gflops  # noqa: E402

from contriever.data.beir import load_queries  # noqa: E402
from contriever.model import packed  # noqa: E402
from contriever.model.encoder import Encoder, autocast_context, bf16_supported  # noqa: E402
from contriever.serving.searcher import query_length_multiple  # noqa: E402


def query_passes(encoder: Encoder, sequences: list[list[int]], per_pass: int, precision: str) -> np.ndarray:
    """`serve`'s model thread: length-sorted passes of `per_pass` texts (exact lengths when packed,
    rounded to 8 under bf16 otherwise, as `Searcher._embed` does)."""
    device = encoder.device
    order = np.argsort([-len(s) for s in sequences], kind="stable")
    out = np.empty((len(sequences), encoder.dim), dtype=np.float32)
    multiple = query_length_multiple(encoder, precision)
    with torch.inference_mode(), autocast_context(device, precision):
        for start in range(0, len(order), per_pass):
            rows = order[start : start + per_pass]
            ids, mask = encoder.collate([sequences[i] for i in rows], multiple)
            out[rows] = encoder(ids, mask).float().numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--model", default="default")
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "packed_inference.json"))
    args = parser.parse_args()

    encoder = Encoder.load(args.model)
    encoder.eval()
    config = encoder.model.config
    queries = list(load_queries(args.data).values())[: args.queries]
    query_ids = encoder.tokenize(queries, prompt_name="query")
    flops = transformer_flops(
        [len(s) for s in query_ids], config.num_hidden_layers, config.hidden_size, config.intermediate_size
    )
    precisions = ["bf16", "fp32"] if bf16_supported(torch.device("cpu")) else ["fp32"]
    # serve's model thread: one thread. Corpus encoding (`Encoder.encode`) runs the transformers
    # forward since memory crept packed; its rows in benchmarks/README.md come from this script at
    # commit 8dd5b07, when it ran packed (on all threads).
    workloads = [("queries, passes of 8, 1 thread", 8), ("queries, passes of 32, 1 thread", 32)]
    torch.set_num_threads(1)

    # warm both paths and every shape family once
    for enabled in (False, True):
        packed.ENABLED = enabled
        for precision in precisions:
            for _, per_pass in workloads:
                query_passes(encoder, query_ids, per_pass, precision)

    rounds: dict[str, list[dict]] = {}
    vectors: dict[tuple, np.ndarray] = {}
    peaks = {p: [] for p in precisions}
    for round_ in range(args.rounds):
        for precision in precisions:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            peak = max(gflops(m, k, n, dtype, 0.5) for m, k, n in SHAPES)
            peaks[precision].append({"1 thread": round(peak, 1)})
            for name, per_pass in workloads:
                for enabled in (False, True):
                    packed.ENABLED = enabled
                    started = time.perf_counter()
                    out = query_passes(encoder, query_ids, per_pass, precision)
                    seconds = time.perf_counter() - started
                    path = "packed" if enabled else "transformers"
                    vectors[(name, precision, path)] = out
                    rate = flops / seconds / 1e9
                    key = f"{name} | {precision} | {path}"
                    rounds.setdefault(key, []).append(
                        {
                            "seconds": round(seconds, 3),
                            "gflops": round(rate, 1),
                            "of_peak": round(rate / peak, 3),
                        }
                    )
                    print(
                        f"round {round_}: {key}: {seconds:.2f} s, {rate:.1f} GFLOP/s, {rate / peak:.2f} of {peak:.0f}",
                        flush=True,
                    )
    packed.ENABLED = True

    rows = []
    for name, _ in workloads:
        count = len(query_ids)
        for precision in precisions:
            medians = {}
            for path in ("transformers", "packed"):
                runs = rounds[f"{name} | {precision} | {path}"]
                medians[path] = {
                    "texts_per_s": round(count / float(np.median([r["seconds"] for r in runs])), 1),
                    "of_peak": float(np.median([r["of_peak"] for r in runs])),
                    "of_peak_range": [min(r["of_peak"] for r in runs), max(r["of_peak"] for r in runs)],
                }
            cosine = cosine_rows(
                vectors[(name, precision, "packed")], vectors[(name, precision, "transformers")]
            )
            speedups = [
                t["seconds"] / p["seconds"]
                for t, p in zip(
                    rounds[f"{name} | {precision} | transformers"], rounds[f"{name} | {precision} | packed"]
                )
            ]
            rows.append(
                {
                    "workload": name,
                    "precision": precision,
                    "transformers": medians["transformers"],
                    "packed": medians["packed"],
                    "speedup_median": round(float(np.median(speedups)), 2),
                    "speedup_range": [round(min(speedups), 2), round(max(speedups), 2)],
                    "min_cosine_between_paths": round(float(cosine.min()), 6),
                }
            )
    result = {
        "command": "python benchmarks/packed_inference.py " + " ".join(sys.argv[1:]),
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": 1,
        "torch": torch.__version__,
        "model": args.model,
        "queries": len(query_ids),
        "mean_query_tokens": round(float(np.mean([len(s) for s in query_ids])), 1),
        "matmul_peak_gflops": peaks,
        "peak_rss_mib_end": round(resident_mib(), 0),
        "rows": rows,
        "rounds": rounds,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{result['cpu']} ({result['cpu_capability']}), torch {torch.__version__}, {len(query_ids)} queries "
        f"(mean {result['mean_query_tokens']} tokens)"
    )
    print(
        "| workload | precision | transformers: texts/s | of peak | packed: texts/s | of peak | packed / transformers (range) | min cosine |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        t, p = r["transformers"], r["packed"]
        print(
            f"| {r['workload']} | {r['precision']} | {t['texts_per_s']} | {t['of_peak']:.2f} | {p['texts_per_s']} | "
            f"{p['of_peak']:.2f} | {r['speedup_median']}x ({r['speedup_range'][0]}-{r['speedup_range'][1]}) | "
            f"{r['min_cosine_between_paths']} |"
        )


if __name__ == "__main__":
    main()
