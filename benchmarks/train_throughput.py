"""Training throughput (pairs/s): our in-batch contrastive step against sentence-transformers'
`MultipleNegativesRankingLoss` step, same model, batch, sequence length and pairs, in the same run.

    python benchmarks/train_throughput.py --data ../shared/data/scifact --batch-size 32 --max-length 128 --steps 5

Each step: encode queries and positives, InfoNCE over in-batch negatives (temperature 0.05 = scale 20),
backward, AdamW update. sentence-transformers is timed as its trainer runs it by default (fp32) and
also under the same bf16 autocast as ours, so the comparison separates precision from the rest.
Writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from contriever.data.beir import load_beir
from contriever.data.documents import document_text
from contriever.model.encoder import Encoder, autocast_context, default_model_path
from contriever.training.losses.inbatch import InBatchLoss


def scifact_pairs(folder: str, n: int) -> list[tuple[str, str]]:
    corpus, queries, qrels = load_beir(folder, split="train")
    pairs = []
    for qid, rels in qrels.items():
        doc_id = next(d for d, s in rels.items() if s > 0)
        pairs.append((queries[qid], document_text(corpus[doc_id])))
    return (pairs * (n // len(pairs) + 1))[:n]


def time_steps(step, batches, warmup: int = 1) -> float:
    for batch in batches[:warmup]:
        step(batch)
    start = time.perf_counter()
    for batch in batches[warmup:]:
        step(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--model", help="model folder (default: the default model)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "train_throughput.json"))
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    device = torch.device(args.device)
    pairs = scifact_pairs(args.data, args.batch_size * (args.steps + 1))
    batches = [pairs[i : i + args.batch_size] for i in range(0, len(pairs), args.batch_size)]

    # ----- ours ----------------------------------------------------------------------------------------
    model_path = args.model or str(default_model_path())
    encoder = Encoder.load(model_path, max_length=args.max_length).to(device)
    encoder.train()
    loss_fn = InBatchLoss(temperature=0.05)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-5)

    def ours_step(batch):
        q_ids, q_mask = encoder.collate(encoder.tokenize([q for q, _ in batch]))
        k_ids, k_mask = encoder.collate(encoder.tokenize([d for _, d in batch]))
        with autocast_context(device, "auto"):
            q = encoder(q_ids.to(device), q_mask.to(device))
            k = encoder(k_ids.to(device), k_mask.to(device))
            loss, _ = loss_fn(q, k)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    # ----- sentence-transformers -------------------------------------------------------------------------
    model = SentenceTransformer(model_path, device=str(device))
    model.max_seq_length = args.max_length
    model.train()
    mnrl = MultipleNegativesRankingLoss(model, scale=20.0)
    st_optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def st_step(batch, precision="fp32"):
        features = [model.tokenize([q for q, _ in batch]), model.tokenize([d for _, d in batch])]
        features = [{n: t.to(device) for n, t in f.items() if isinstance(t, torch.Tensor)} for f in features]
        with autocast_context(device, precision):
            loss = mnrl(features, labels=None)
        st_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        st_optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    timings = {
        "sentence-transformers MNRL step (fp32, its default)": time_steps(st_step, batches),
        "sentence-transformers MNRL step (bf16 autocast)": time_steps(lambda b: st_step(b, "auto"), batches),
        "contriever in-batch step (bf16 autocast)": time_steps(ours_step, batches),
    }
    n_pairs = args.batch_size * args.steps
    baseline = timings["sentence-transformers MNRL step (fp32, its default)"]
    rows = [
        {
            "method": name,
            "seconds": round(s, 2),
            "pairs_per_s": round(n_pairs / s, 1),
            "speedup": round(baseline / s, 2),
        }
        for name, s in timings.items()
    ]
    result = {
        "command": f"python benchmarks/train_throughput.py --data {args.data} --batch-size {args.batch_size} "
        f"--max-length {args.max_length} --steps {args.steps} --device {args.device}"
        + (f" --model {args.model}" if args.model else ""),
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "rows": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"batch {args.batch_size}, max length {args.max_length}, {args.steps} timed steps, {result['device']}"
    )
    print("| method | s | pairs/s | speed-up |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['seconds']} | {r['pairs_per_s']} | {r['speedup']}x |")


if __name__ == "__main__":
    main()
