"""Encoding throughput: `Encoder.encode_corpus` against sentence-transformers' `encode`, same model,
batch size and documents, in the same run; plus the fraction of the machine's matmul peak reached.

    python benchmarks/encode_throughput.py --data ../shared/data/scifact --n 1000 --batch-size 64
    python benchmarks/encode_throughput.py --sweep 2048,4096,8192,16384 --batch-sizes 64,128 --n 200 --rounds 3

Prints a markdown table (docs/s, speed-up, cosine of our vectors to the fp32 reference, achieved
GFLOP/s) and writes it as JSON to benchmarks/results/encode_throughput.json.

`--sweep`: our encoder alone (auto precision), batches cut by each token budget and by each
`--batch-sizes` count, against `benchmarks/matmul_peak.py`'s products measured in the same run, round
by round (interleaved, so a change in the machine's load hits every setting): each setting's GFLOP/s
as a fraction of the matmul peak of its round, the median and the spread over rounds
(benchmarks/results/encode_sweep.json).
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

from contriever.data.beir import load_corpus
from contriever.data.documents import document_text
from contriever.model.encoder import Encoder, default_model_path


def transformer_flops(lengths: list[int], layers: int, hidden: int, intermediate: int) -> float:
    """Matmul FLOPs of a BERT forward pass over sequences of these lengths (2 FLOPs per multiply-add).

    Per token and layer: Q, K, V and output projections (4 h^2), the feed-forward (2 h i), and the
    attention products QK^T and AV (2 n h for a sequence of n tokens).
    """
    total = 0.0
    for n in lengths:
        total += layers * 2 * (n * (4 * hidden * hidden + 2 * hidden * intermediate) + 2 * n * n * hidden)
    return total


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--n", type=int, default=1000, help="documents to encode")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "encode_throughput.json"))
    parser.add_argument("--sweep", help="token budgets to compare, e.g. 2048,4096,8192 (see the docstring)")
    parser.add_argument("--batch-sizes", default="", help="with --sweep: batch sizes to compare too")
    parser.add_argument("--rounds", type=int, default=3, help="with --sweep: interleaved rounds")
    args = parser.parse_args()
    if args.sweep:
        sweep(args)
        return

    from sentence_transformers import SentenceTransformer

    docs = list(load_corpus(args.data).values())[: args.n]
    texts = [document_text(d) for d in docs]
    ours = Encoder.load()
    theirs = SentenceTransformer(str(default_model_path()), device="cpu")
    assert theirs.max_seq_length == ours.max_length, "both must truncate at the same length"

    config = ours.model.config
    lengths = [len(ids) for ids in ours.tokenize(texts)]
    flops = transformer_flops(lengths, config.num_hidden_layers, config.hidden_size, config.intermediate_size)

    warm = texts[:64]
    ours.encode_corpus(warm, args.batch_size, show_progress=False)
    theirs.encode(warm, batch_size=args.batch_size)

    def timed(fn):
        best, result = float("inf"), None
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - start)
        return best, result

    st_time, st_vectors = timed(
        lambda: theirs.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
    )
    fp32_time, fp32_vectors = timed(
        lambda: ours.encode_corpus(docs, args.batch_size, precision="fp32", show_progress=False)
    )
    auto_time, auto_vectors = timed(lambda: ours.encode_corpus(docs, args.batch_size, show_progress=False))

    rows = []
    for name, seconds, vectors in (
        ("sentence-transformers encode (fp32)", st_time, st_vectors),
        ("contriever encode_corpus (fp32)", fp32_time, fp32_vectors),
        ("contriever encode_corpus (auto: bf16 autocast)", auto_time, auto_vectors),
    ):
        cos = cosine_rows(vectors, st_vectors)
        rows.append(
            {
                "method": name,
                "seconds": round(seconds, 2),
                "docs_per_s": round(len(texts) / seconds, 1),
                "speedup_vs_st": round(st_time / seconds, 2),
                "min_cosine_to_fp32": round(float(cos.min()), 6),
                "gflops_per_s": round(flops / seconds / 1e9, 1),
            }
        )
    result = {
        "command": f"python benchmarks/encode_throughput.py --data {args.data} --n {args.n} --batch-size {args.batch_size}",
        "documents": len(texts),
        "mean_tokens": round(float(np.mean(lengths)), 1),
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rows": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"{len(texts)} SciFact documents, mean {result['mean_tokens']} tokens, batch {args.batch_size}, "
        f"{result['threads']} threads, torch {torch.__version__}"
    )
    print("| method | s | docs/s | speed-up vs ST | min cosine to fp32 | GFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['method']} | {r['seconds']} | {r['docs_per_s']} | {r['speedup_vs_st']}x | "
            f"{r['min_cosine_to_fp32']} | {r['gflops_per_s']} |"
        )


def matmul_peak(seconds: float = 1.0) -> float:
    """fp32 (or bf16 where native: what `auto` encodes in) GFLOP/s of MiniLM's matmul shapes, best shape."""
    sys.path.insert(0, str(Path(__file__).parent))
    from matmul_peak import SHAPES, gflops

    from contriever.model.encoder import bf16_supported

    dtype = torch.bfloat16 if bf16_supported(torch.device("cpu")) else torch.float32
    return max(gflops(m, k, n, dtype, seconds) for m, k, n in SHAPES)


def products_rate(tokens: int, hidden: int, intermediate: int, seconds: float = 1.0) -> float:
    """GFLOP/s of the model's own linear products at `tokens` rows, weighted as a layer runs them:
    four `hidden x hidden` (Q, K, V, output), one `hidden x intermediate`, one `intermediate x
    hidden`. A small model's 384 x 384 products run far below the best shape's rate: this is the
    rate its matrix products can reach, the ceiling encoding is compared with besides the best."""
    sys.path.insert(0, str(Path(__file__).parent))
    from matmul_peak import gflops

    from contriever.model.encoder import bf16_supported

    dtype = torch.bfloat16 if bf16_supported(torch.device("cpu")) else torch.float32
    shapes = [(4, hidden, hidden), (1, hidden, intermediate), (1, intermediate, hidden)]
    work = [count * 2 * tokens * k * n for count, k, n in shapes]
    time_needed = sum(w / (gflops(tokens, k, n, dtype, seconds) * 1e9) for w, (_, k, n) in zip(work, shapes))
    return sum(work) / time_needed / 1e9


def sweep(args) -> None:
    docs = list(load_corpus(args.data).values())[: args.n]
    texts = [document_text(d) for d in docs]
    encoder = Encoder.load()
    config = encoder.model.config
    lengths = [len(ids) for ids in encoder.tokenize(texts)]
    flops = transformer_flops(lengths, config.num_hidden_layers, config.hidden_size, config.intermediate_size)
    settings = [("budget", int(b)) for b in args.sweep.split(",")]
    settings += [("batch", int(b)) for b in args.batch_sizes.split(",") if b]
    encoder.encode(texts[:32], token_budget=2048, show_progress=False)  # warm up
    results: dict[str, list[dict]] = {f"{kind} {value}": [] for kind, value in settings}
    peaks, own_rates = [], []
    for round_ in range(args.rounds):
        peak = matmul_peak()
        peaks.append(peak)
        # at the default budget's rows: the products of one batch of the default encoding
        own = products_rate(2048, config.hidden_size, config.intermediate_size)
        own_rates.append(own)
        for kind, value in settings:
            started = time.perf_counter()
            if kind == "budget":
                encoder.encode(texts, token_budget=value, show_progress=False)
            else:
                encoder.encode(texts, value, show_progress=False)
            seconds = time.perf_counter() - started
            rate = flops / seconds / 1e9
            results[f"{kind} {value}"].append(
                {
                    "seconds": round(seconds, 2),
                    "gflops": round(rate, 1),
                    "of_peak": round(rate / peak, 3),
                    "of_own_products": round(rate / own, 3),
                }
            )
            print(
                f"round {round_}: {kind} {value}: {seconds:.1f} s, {rate:.1f} GFLOP/s, {rate / peak:.2f} of {peak:.1f}"
                f" (best shape), {rate / own:.2f} of {own:.1f} (the model's own products)",
                flush=True,
            )
    rows = []
    for name, runs in results.items():
        fractions = sorted(r["of_peak"] for r in runs)
        rows.append(
            {
                "setting": name,
                "median_gflops": float(np.median([r["gflops"] for r in runs])),
                "median_of_peak": float(np.median(fractions)),
                "min_of_peak": fractions[0],
                "max_of_peak": fractions[-1],
                "median_of_own_products": float(np.median([r["of_own_products"] for r in runs])),
                "docs_per_s": round(len(texts) / float(np.median([r["seconds"] for r in runs])), 1),
            }
        )
    result = {
        "command": "python benchmarks/encode_throughput.py " + " ".join(sys.argv[1:]),
        "documents": len(texts),
        "mean_tokens": round(float(np.mean(lengths)), 1),
        "threads": torch.get_num_threads(),
        "matmul_peak_gflops": [round(p, 1) for p in peaks],
        "own_products_gflops": [round(p, 1) for p in own_rates],
        "rows": rows,
        "rounds": results,
    }
    output = Path(args.output).with_name("encode_sweep.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"matmul peak per round (GFLOP/s): {result['matmul_peak_gflops']}")
    print(f"the model's own products per round (GFLOP/s): {result['own_products_gflops']}")
    print(
        "| setting | GFLOP/s (median) | fraction of the best shape's rate: median (min-max) "
        "| of the model's own products | docs/s |"
    )
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['setting']} | {r['median_gflops']:.1f} | {r['median_of_peak']:.2f} "
            f"({r['min_of_peak']:.2f}-{r['max_of_peak']:.2f}) | {r['median_of_own_products']:.2f} | {r['docs_per_s']} |"
        )


if __name__ == "__main__":
    main()
