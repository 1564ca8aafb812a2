"""SQuAD as a closed retrieval task: nDCG@10 and R@100 against the gold paragraphs, from the very
rankings evaluate-qa retrieved for its answer accuracy (no second search, no second encoding).

`../shared/data/squad-dev` holds SQuAD v1.1 dev's 2,067 paragraphs, its 10,570 questions with
their answers (`questions.jsonl`, for evaluate-qa) and the paragraph each question was written from
(`qrels/test.tsv`). evaluate-qa's `results.jsonl` keep each question's top-100 passage ids, best
first; a run with score `-rank` gives `contriever.evaluation.metrics.evaluate_run` (pytrec_eval) the
same order, so nDCG@10 / R@100 here are BEIR's metrics on evaluate-qa's rankings:

    contriever evaluate-qa --questions ../shared/data/squad-dev/questions.jsonl --index IDX \
        --model bm25 --model default --model hybrid:default --output /tmp/qa-work/out-squad-dev
    python benchmarks/qa_squad_closed.py /tmp/qa-work/out-squad-dev
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from contriever.data.beir import load_qrels
from contriever.evaluation.metrics import evaluate_run
from contriever.evaluation.qa_eval import system_names

DATA = Path(__file__).resolve().parents[1] / "../shared/data/squad-dev"


def run_from_results(path: Path) -> dict[str, dict[str, float]]:
    run = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        run[record["id"]] = {doc: -float(rank) for rank, doc in enumerate(record["retrieved"], start=1)}
    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output", type=Path, help="an evaluate-qa --output folder over squad-dev")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    qrels = load_qrels(args.data, "test")
    metrics = json.loads((args.output / "metrics.json").read_text())
    (set_name,) = metrics["sets"]  # one question file: squad-dev's questions, or a fixed part of them
    entry = metrics["sets"][set_name]
    report = {}
    print(
        f"{'system':<20} {'top-1':>6} {'top-5':>6} {'top-20':>6} {'top-100':>7} {'nDCG@10':>8} {'R@100':>6}"
    )
    folders = system_names(list(entry["systems"]))
    for system, name in folders.items():
        run = run_from_results(args.output / set_name / name / "results.jsonl")
        beir = evaluate_run({qid: qrels[qid] for qid in run}, run)  # the questions evaluated, all judged
        accuracy = entry["systems"][system]
        report[system] = {**{k: accuracy[k] for k in ("top1", "top5", "top20", "top100")}, **beir}
        cells = [100 * accuracy[k] for k in ("top1", "top5", "top20", "top100")] + [
            100 * beir["ndcg@10"],
            100 * beir["recall@100"],
        ]
        print(f"{system:<20} " + " ".join(f"{c:6.1f}" for c in cells))
    (args.output / "closed.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
