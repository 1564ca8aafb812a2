"""Multilingual unlabelled text for mContriever-style training: Debian's translated package descriptions.

Debian ships every package description translated by the Debian Description Translation Project in
`dists/SUITE/main/i18n/Translation-LANG` files; apt downloads them for the languages named in
`Acquire::Languages`. This script has apt fetch them into a private lists folder (never touching the
system's /var/lib/apt/lists unless asked to read it), reads them through apt's own decompressor
(`apt-helper cat-file`, lz4/xz/gz alike) and writes one raw-text source per language:

    OUT/LANG.jsonl   {"_id": Description-md5, "text": short + long description}, one description a line
    OUT/counts.json  per language: descriptions read, kept, excluded (and why), written with the files

Exclusions (so training never sees a test query or its answer):
  * every `Description-md5` used as a query in `../shared/data/debian-xling` (its queries' ids are
    `LANG-MD5`; the qrels' corpus ids are the same md5s), in EVERY language, English included: the
    English description of a query is the relevant document, and the same md5 in another language is
    the query itself or its translation into a third language;
  * nothing from XQuAD or SQuAD can enter: the only input is Debian's archive.
Descriptions are de-duplicated by md5 within a language (one line per description).

The description text is formatted as debian-xling's README says (short line, then paragraphs: a ` .`
line breaks a paragraph, wrapped lines joined with spaces, lines with an extra leading space kept as
lines), so training text looks like the evaluation's queries and documents.

    python benchmarks/debian_translations.py --fetch --lists /work/mdata/lists --out /work/mdata
    python benchmarks/debian_translations.py --lists /var/lib/apt/lists --out /work/mdata   # already fetched

`--fetch` runs (as root, apt's own download; about 36 MB for the twenty languages):
    apt-get -o Dir::State::Lists=LISTS -o Acquire::Languages=en,de,... update
Data files are never written into the repository.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
XLING = ROOT.parent / "shared" / "data" / "debian-xling"
# The twenty languages debian-xling's README requested (its 14 test languages and six more).
LANGUAGES = "en,de,fr,es,it,pt,pt_BR,ru,ja,zh_CN,pl,nl,cs,uk,sv,fi,da,hu,ko,vi"
TRANSLATION_FILE = re.compile(r"_i18n_Translation-([A-Za-z_%0-9]+?)(?:\.(?:lz4|gz|xz|bz2|zst))?$")
APT_HELPER = "/usr/lib/apt/apt-helper"


def fetch_lists(lists: Path, languages: str) -> None:
    """apt-get update into `lists` with the translation languages enabled (apt's own download)."""
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    command = [
        "apt-get",
        "-o",
        f"Dir::State::Lists={lists}",
        "-o",
        f"Acquire::Languages={languages}",
        "update",
    ]
    print("+", " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True)


def translation_files(lists: Path) -> dict[str, list[Path]]:
    """{language: [Translation-LANG files of every suite]} found in an apt lists folder."""
    found: dict[str, list[Path]] = {}
    for path in sorted(lists.iterdir()):
        match = TRANSLATION_FILE.search(path.name)
        if match and path.is_file():
            found.setdefault(unquote(match.group(1)), []).append(path)
    return found


def read_apt_file(path: Path) -> str:
    """A file of apt's lists folder, decompressed by apt itself (whatever compression apt chose)."""
    result = subprocess.run([APT_HELPER, "cat-file", str(path)], capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(
            f"{path}: apt-helper cat-file failed: {result.stderr.decode(errors='replace').strip()}"
        )
    return result.stdout.decode("utf-8", errors="replace")


def paragraphs(text: str):
    """The deb822 stanzas of a Translation file, as {field: value} (continuation lines kept raw)."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.split("\n"):
            if not line:
                continue
            if line[0] in " \t" and key is not None:
                fields[key] += "\n" + line
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields:
            yield fields


def description_text(value: str) -> str:
    """A Description field as one string: the short line, then its paragraphs (debian-xling's rules)."""
    short, _, long = value.partition("\n")
    parts = [short.strip()]
    current: list[str] = []
    for line in long.split("\n"):
        if not line.strip():
            continue
        body = line[1:] if line.startswith(" ") else line
        if body.strip() == ".":
            if current:
                parts.append(" ".join(current))
                current = []
        elif body.startswith((" ", "\t")):  # verbatim / bullet lines stay lines of their own
            if current:
                parts.append(" ".join(current))
                current = []
            parts.append(body.strip())
        else:
            current.append(body.strip())
    if current:
        parts.append(" ".join(current))
    return "\n".join(p for p in parts if p)


def excluded_md5s(xling: Path) -> set[str]:
    """Every Description-md5 used as a query in debian-xling, whatever its language."""
    md5s: set[str] = set()
    for queries in sorted(xling.glob("*/queries.jsonl")):
        with open(queries, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    md5s.add(json.loads(line)["_id"].rsplit("-", 1)[1])
    for qrels in sorted(xling.glob("*/qrels/*.tsv")):
        for row in qrels.read_text(encoding="utf-8").splitlines()[1:]:
            if row.strip():
                md5s.add(row.split("\t")[1])
    if not md5s:
        raise SystemExit(f"{xling}: no debian-xling queries found (expected LANG/queries.jsonl)")
    return md5s


def write_language(language: str, files: list[Path], excluded: set[str], out: Path) -> dict:
    """OUT/LANG.jsonl from the language's Translation files; returns its counts."""
    counts = Counter()
    seen: set[str] = set()
    target = out / f"{language}.jsonl"
    tmp = target.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for path in files:
            for fields in paragraphs(read_apt_file(path)):
                md5 = fields.get("Description-md5")
                value = fields.get(f"Description-{language}")
                if not md5 or value is None:
                    counts["malformed"] += 1
                    continue
                counts["read"] += 1
                if md5 in seen:
                    counts["duplicate_md5"] += 1
                    continue
                seen.add(md5)
                if md5 in excluded:
                    counts["excluded_debian_xling_query"] += 1
                    continue
                text = description_text(value)
                if not text.strip():
                    counts["empty"] += 1
                    continue
                handle.write(json.dumps({"_id": md5, "text": text}, ensure_ascii=False) + "\n")
                counts["kept"] += 1
                counts["chars"] += len(text)
    tmp.replace(target)
    return {"files": [p.name for p in files], **{k: counts[k] for k in sorted(counts)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lists", type=Path, default=Path("/var/lib/apt/lists"), help="apt lists folder")
    parser.add_argument(
        "--out", type=Path, required=True, help="where LANG.jsonl go (outside the repository)"
    )
    parser.add_argument("--fetch", action="store_true", help="run apt-get update into --lists first")
    parser.add_argument("--languages", default=LANGUAGES, help="comma-separated (Acquire::Languages)")
    parser.add_argument("--xling", type=Path, default=XLING, help="debian-xling folder (queries to exclude)")
    args = parser.parse_args(argv)
    if args.out.resolve().is_relative_to(ROOT):
        raise SystemExit(f"{args.out}: inside the repository; data files go outside it")
    if args.fetch:
        fetch_lists(args.lists, args.languages)
    excluded = excluded_md5s(args.xling)
    wanted = args.languages.split(",")
    files = translation_files(args.lists)
    missing = [lang for lang in wanted if lang not in files]
    if missing:
        raise SystemExit(f"{args.lists}: no Translation file for {', '.join(missing)}: run with --fetch")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"excluded_md5s": len(excluded), "xling": str(args.xling), "languages": {}}
    for language in wanted:
        report["languages"][language] = counts = write_language(language, files[language], excluded, args.out)
        print(
            f"{language:6s} kept {counts.get('kept', 0):7,d}  excluded {counts.get('excluded_debian_xling_query', 0):6,d}"
            f"  (read {counts.get('read', 0):,}, duplicate md5 {counts.get('duplicate_md5', 0):,})"
        )
    (args.out / "counts.json").write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"{len(excluded):,} debian-xling query md5s excluded in every language; counts in {args.out / 'counts.json'}"
    )


if __name__ == "__main__":
    main()
