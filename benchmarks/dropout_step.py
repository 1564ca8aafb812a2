"""What attention dropout costs a training step: the default model's forward and backward on a batch of
full-length documents, with BERT's dropout (0.1 on hidden states and on attention weights), with
attention dropout off (`model.attention_dropout = 0`), and with no dropout at all.

    python benchmarks/dropout_step.py --batch-size 32 --length 256 --repeats 3

With dropout on the attention weights, PyTorch's fused attention kernel cannot be used in training:
attention falls back to separate matrix products, a softmax and a Bernoulli mask per weight
(batch x heads x length^2 random draws a layer), which on a CPU costs as much as the rest of the step.
Writes benchmarks/results/dropout_step.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from encode_throughput import transformer_flops

from contriever.model.encoder import Encoder, autocast_context, bf16_supported

SETTINGS = {  # name: (hidden dropout, attention dropout)
    "BERT's dropout (0.1 hidden, 0.1 attention)": (0.1, 0.1),
    "attention dropout off (0.1 hidden, 0 attention)": (0.1, 0.0),
    "no dropout": (0.0, 0.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per setting (median kept)")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "dropout_step.json"))
    args = parser.parse_args()

    encoder = Encoder.load()
    encoder.train()
    config = encoder.model.config
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, config.vocab_size, (args.batch_size, args.length), generator=generator)
    mask = torch.ones_like(ids)
    device = torch.device("cpu")
    flops = 3 * transformer_flops(
        [args.length] * args.batch_size,
        config.num_hidden_layers,
        config.hidden_size,
        config.intermediate_size,
    )  # backward is about twice the forward

    def step() -> float:
        start = time.perf_counter()
        with autocast_context(device, "auto"):
            vectors = encoder(ids, mask)
        vectors.float().pow(2).sum().backward()
        encoder.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    rows = []
    for name, (hidden, attention) in SETTINGS.items():
        encoder.set_dropout(hidden, attention)
        step()  # warm-up
        seconds = statistics.median(step() for _ in range(args.repeats))
        rows.append({"setting": name, "seconds": round(seconds, 2), "gflop_s": round(flops / seconds / 1e9)})
    baseline = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = round(baseline / row["seconds"], 2)

    result = {
        "command": f"python benchmarks/dropout_step.py --batch-size {args.batch_size} --length {args.length} "
        f"--repeats {args.repeats}",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"precision {'bf16 autocast' if bf16_supported(device) else 'fp32 (no fast bf16 here)'}",
        "rows": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"forward + backward, {args.batch_size} x {args.length} tokens, {result['machine']}")
    print("| setting | s a step | speed-up | GFLOP/s |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['setting']} | {row['seconds']} | {row['speedup']}x | {row['gflop_s']} |")


if __name__ == "__main__":
    main()
