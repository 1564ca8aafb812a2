"""What batch shapes cost under bf16 on a CPU (issue 22): oneDNN keeps kernels and scratch memory
for every input shape it meets, so padding batches to their exact length grows resident memory.

    python benchmarks/bf16_shapes.py memory --multiple 1    # one 2,048-token batch and one tail
                                                            # batch per length 90-259, twice
    python benchmarks/bf16_shapes.py speed --multiple 16 --docs 2000 --budget 2048

`memory` prints resident memory every 40 lengths; `speed` encodes the first `--docs` SciFact
documents as `contriever index` does (blocks of 1,024 texts, token budget) and prints documents/s
and peak RSS (bf16 where `auto` chooses it; elsewhere the multiple is not used). `--multiple 1` is exact padding (what encoding did before), 16 the default now
(`contriever.model.encoder.BF16_CPU_LENGTH_MULTIPLE`). Run each setting in its own process: the
shapes a process has met are what is measured.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import time
from pathlib import Path

import torch

import contriever.model.encoder as encoder_module
from contriever.data.documents import document_text
from contriever.model.encoder import Encoder
from contriever.model.precision import autocast_context

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scifact"


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(encoder: Encoder, multiple: int, budget: int = 2048) -> dict:
    lengths = list(range(90, 260))
    random.Random(0).shuffle(lengths)
    marks = []
    with torch.inference_mode(), autocast_context(torch.device("cpu"), "bf16"):
        for i, length in enumerate(lengths * 2):
            padded = -(-length // multiple) * multiple
            rows = budget // padded
            for batch_rows in (rows, max(1, rows // 3)):  # a full batch and a block's tail
                ids = torch.full((batch_rows, padded), 100)
                encoder(ids, torch.ones_like(ids))
            if i % 40 == 0:
                marks.append(round(resident_mib()))
    return {"multiple": multiple, "resident_mib_every_40_lengths": marks, "final_mib": round(resident_mib())}


def speed(encoder: Encoder, multiple: int, docs: int, budget: int, data: Path) -> dict:
    with gzip.open(data / "corpus.jsonl.gz", "rt") as handle:
        texts = [document_text(json.loads(line)) for line, _ in zip(handle, range(docs))]
    started = time.perf_counter()
    for start in range(0, len(texts), 1024):
        encoder.encode(
            texts[start : start + 1024], token_budget=budget, show_progress=False, prompt_name="passage"
        )
    seconds = time.perf_counter() - started
    return {
        "multiple": multiple,
        "docs": len(texts),
        "budget": budget,
        "seconds": round(seconds, 1),
        "docs_per_s": round(len(texts) / seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("memory", "speed"))
    parser.add_argument("--multiple", type=int, default=encoder_module.BF16_CPU_LENGTH_MULTIPLE)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    encoder_module.BF16_CPU_LENGTH_MULTIPLE = args.multiple  # read by shape_multiple at each encode
    encoder = Encoder.load("default")
    encoder.eval()
    if args.what == "memory":
        print(json.dumps(memory(encoder, args.multiple)))
    else:
        print(json.dumps(speed(encoder, args.multiple, args.docs, args.budget, args.data)))


if __name__ == "__main__":
    main()
