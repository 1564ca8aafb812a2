"""The QA table of benchmarks/README.md: rows from evaluate-qa's metrics.json files (and `evaluate`'s
for SQuAD's nDCG@10 / R@100), each with its ceiling and the command that produced it.

    python benchmarks/qa_table.py /tmp/qa-work/out-enwiki-bm25/metrics.json /tmp/qa-work/out-enwiki-100k/metrics.json ...

Prints one markdown row per question set and system: top-1/5/20/100 (x100), the ceiling (the share of
questions with an answering passage in that corpus), the number of questions and the command (taken
from the metrics, which record it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SET_ORDER = ["nq-test", "trivia-test", "wq-test", "curated-test", "squad-test", "squad-dev"]


def rows(metrics_path: Path) -> list[str]:
    data = json.loads(metrics_path.read_text())
    meta = data["meta"]
    corpus = f"{meta['passages']:,} passages" + (
        " (answerable questions only)" if meta.get("answerable_only") else ""
    )
    command = meta.get("command") or "(not recorded)"
    out = []
    names = sorted(data["sets"], key=lambda n: SET_ORDER.index(n) if n in SET_ORDER else len(SET_ORDER))
    for name in names:
        entry = data["sets"][name]
        for system, m in entry["systems"].items():
            cells = " | ".join(f"{100 * m[f'top{k}']:.1f}" for k in (1, 5, 20, 100))
            out.append(
                f"| {name} | {corpus} | {system} | {cells} | {100 * entry['ceiling']:.1f} | "
                f"{entry['n_questions']:,} | `{command}` |"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("metrics", nargs="+", type=Path, help="evaluate-qa metrics.json files")
    args = parser.parse_args()
    print(
        "| questions | corpus | system | top-1 | top-5 | top-20 | top-100 | ceiling | questions | command |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for path in args.metrics:
        for row in rows(path):
            print(row)


if __name__ == "__main__":
    main()
