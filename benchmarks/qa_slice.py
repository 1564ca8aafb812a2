"""The fixed enwiki slices of the QA benchmarks: the first N 100-word passages of the sample, in order.

`contriever index --corpus ../shared/data/enwiki-2015-sample/part-0*.jsonl.gz --words 100` splits the
sample into 666,158 passages (ids `DOCID#N`, the title carried); a slice is the first N of them, in
exactly that order, written as a corpus file (`_id`, `title`, `text`, one passage a line) so that an
index of it (`contriever index --corpus SLICE`, whole documents) holds the very passages, ids and
texts of the full split. The file is written outside the repository (data is never copied into it):

    python benchmarks/qa_slice.py --passages 100000 --output /tmp/qa-work/enwiki-first-100000.jsonl
"""

from __future__ import annotations

import argparse
import json
from itertools import islice
from pathlib import Path

from contriever.data.passages import PassageSettings, iter_passages
from contriever.io import atomic_write

ENWIKI = sorted(
    Path(__file__).resolve().parents[1].joinpath("../shared/data/enwiki-2015-sample").glob("part-*.jsonl.gz")
)


def write_slice(n: int, output: Path, words: int = 100) -> int:
    written = 0
    with atomic_write(output) as handle:
        for passage, _ in islice(iter_passages(ENWIKI, PassageSettings(words)), n):
            handle.write(json.dumps({"_id": passage.id, "title": passage.title, "text": passage.text}) + "\n")
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, required=True, help="N: the first N passages")
    parser.add_argument("--output", type=Path, required=True, help="corpus file to write (.jsonl)")
    args = parser.parse_args()
    print(f"wrote {write_slice(args.passages, args.output)} passages to {args.output}")


if __name__ == "__main__":
    main()
