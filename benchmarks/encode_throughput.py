"""Encoding throughput: `Encoder.encode_corpus` against sentence-transformers' `encode`, same model,
batch size and documents, in the same run; plus the fraction of the machine's matmul peak reached.

    python benchmarks/encode_throughput.py --data ../shared/data/scifact --n 1000 --batch-size 64

Prints a markdown table (docs/s, speed-up, cosine of our vectors to the fp32 reference, achieved
GFLOP/s) and writes it as JSON to benchmarks/results/encode_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
