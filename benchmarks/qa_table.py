"""The QA table of benchmarks/README.md, shaped like the paper's Table 1: one row per corpus and
system, NQ and TriviaQA top-5/20/100 then WebQuestions, CuratedTREC and SQuAD top-20/100, and per
corpus a row of ceilings (the share of questions some passage of that corpus answers). Read from
evaluate-qa's metrics.json files, which record the command that made them; each file gets a tag,
and the commands are listed under the table by tag.

    python benchmarks/qa_table.py full=/tmp/qa-work/out-enwiki-bm25/metrics.json \
        100k=/tmp/qa-work/out-enwiki-100k-bm25/metrics.json 5k=/tmp/qa-work/out-enwiki-5000/metrics.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = [  # (set, ks)
    ("nq-test", (5, 20, 100)),
    ("trivia-test", (5, 20, 100)),
    ("wq-test", (20, 100)),
    ("curated-test", (20, 100)),
    ("squad-test", (20, 100)),
]
NAMES = {
    "nq-test": "NQ",
    "trivia-test": "TriviaQA",
    "wq-test": "WQ",
    "curated-test": "TREC",
    "squad-test": "SQuAD",
}


def header() -> list[str]:
    cells = [f"{NAMES[name]} @{k}" for name, ks in COLUMNS for k in ks]
    return [
        "| corpus | system | " + " | ".join(cells) + " | command |",
        "|---|---|" + "---:|" * len(cells) + "---|",
    ]


def rows(tag: str, data: dict) -> list[str]:
    sets = data["sets"]
    meta = data["meta"]
    corpus = f"{tag} ({meta['passages']:,} passages)"
    systems = list(dict.fromkeys(s for entry in sets.values() for s in entry["systems"]))
    out = []
    ceiling_cells = []
    for name, ks in COLUMNS:
        entry = sets.get(name)
        for _ in ks:
            if entry is None:
                ceiling_cells.append("-")
            elif meta.get("answerable_only"):
                ceiling_cells.append(f"({100 * entry['ceiling_all']:.1f})")
            else:
                ceiling_cells.append(f"{100 * entry['ceiling']:.1f}")
    label = "share answerable (evaluated: those only)" if meta.get("answerable_only") else "**ceiling**"
    out.append(f"| {corpus} | {label} | " + " | ".join(ceiling_cells) + f" | [{tag}] |")
    for system in systems:
        cells = []
        for name, ks in COLUMNS:
            metrics = sets.get(name, {}).get("systems", {}).get(system)
            cells += [f"{100 * metrics[f'top{k}']:.1f}" if metrics else "not run" for k in ks]
        out.append(f"| {corpus} | {system} | " + " | ".join(cells) + f" | [{tag}] |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("metrics", nargs="+", help="TAG=path/to/metrics.json (evaluate-qa outputs)")
    args = parser.parse_args()
    loaded = []
    for item in args.metrics:
        tag, _, path = item.partition("=")
        loaded.append((tag, json.loads(Path(path).read_text())))
    print("\n".join(header()))
    for tag, data in loaded:
        print("\n".join(rows(tag, data)))
    print()
    for tag, data in loaded:
        print(f"- [{tag}] `{data['meta'].get('command') or '(not recorded)'}`")


if __name__ == "__main__":
    main()
