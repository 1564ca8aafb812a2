"""`contriever verify FOLDER`: check every file of a folder contriever wrote against its record.

Works on each kind of folder the commands write, found by the record it holds:

| folder | record | what is checked |
|---|---|---|
| index (`contriever index`) | `index.json` | each shard's ids and vectors (size, shape, checksum), shard records, passage store (and an older version's `index.faiss`), and every ANN under `ann/` |
| ANN (`contriever ann-build`) | `ann.json` + `manifest.json` | its files (size, checksum) and that it was built from its index folder's shards as they are now |
| model, tokens, evaluation run, training folder, BM25 | `manifest.json` | each listed file (size, checksum) |

One line per bad file on stdout (`FILE: what is wrong`), then a summary line. Exit code 0 when every
file is as written, 2 when one is missing, damaged or changed, or the folder is not one contriever
wrote. Folders written before checksums were recorded are checked by size and reported as such
(exit 0). A progress bar (bytes hashed) shows on folders over `contriever.io.CHEAP_BYTES`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from contriever.errors import DataError


class _Counter:
    """Counts bytes hashed, forwarding to a progress bar when there is one."""

    def __init__(self, bar=None):
        self.bar, self.bytes = bar, 0

    def update(self, n: int) -> None:
        self.bytes += n
        if self.bar is not None:
            self.bar.update(n)


def _progress(total: int, label: str, show: bool):
    from tqdm.auto import tqdm

    from contriever.io import CHEAP_BYTES

    if total <= CHEAP_BYTES or not show:
        return _Counter()
    return _Counter(tqdm(total=total, desc=f"verifying {label}", unit="B", unit_scale=True, leave=False))


def _index_bytes(manifest: dict) -> int:
    shards = sum(
        int(e.get("vectors_bytes") or 0) + int(e.get("ids_bytes") or 0)
        for e in manifest.get("shards") or []
        if isinstance(e, dict)
    )
    return shards + sum(int((e or {}).get("bytes") or 0) for e in (manifest.get("files") or {}).values())


class _IndexShape:
    """What `ann.source_fingerprint` reads of an index folder, from its index.json alone."""

    def __init__(self, manifest: dict):
        self.manifest, self.dim = manifest, int(manifest["dim"])
        self._count = int(manifest["count"])

    def __len__(self) -> int:
        return self._count


def index_report(folder: Path, show_progress: bool = True) -> tuple[list[DataError], list[str], int]:
    """(problems, notes, files checked) for an index folder and its ANNs."""
    from contriever.retrieval.ann import ANN_DIR, list_ann
    from contriever.retrieval.shards import MANIFEST, index_problems

    manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).is_file() else {}
    entries = [e for e in manifest.get("shards") or [] if isinstance(e, dict)]
    counter = _progress(_index_bytes(manifest), folder.name, show_progress)
    problems = list(index_problems(folder, counter))
    notes = []
    if manifest and (not entries or not all("vectors_checksum" in e for e in entries)):
        notes.append(
            f"{folder / MANIFEST}: written before checksums: sizes and shapes checked, contents cannot be"
        )
    files = 2 * len(entries) + len(manifest.get("files") or {}) + 1
    if counter.bar is not None:
        counter.bar.close()
    for name in list_ann(folder):
        more, more_notes, count = ann_report(folder / ANN_DIR / name, show_progress)
        problems += more
        notes += more_notes
        files += count
    return problems, notes, files


def ann_report(path: Path, show_progress: bool = True) -> tuple[list[DataError], list[str], int]:
    """(problems, notes, files checked) for the ANN folder `path` (inside `IDX/ann/`)."""
    from contriever.io import MANIFEST_NAME, manifest_problems, read_manifest
    from contriever.retrieval.ann import ANN_MANIFEST, source_fingerprint, source_mismatch
    from contriever.retrieval.shards import MANIFEST, _read_manifest

    problems: list[DataError] = []
    notes: list[str] = []
    try:
        manifest = read_manifest(path)
    except DataError as error:
        return [error], notes, 0
    counter = _progress(sum(manifest["files"].values()), path.name, show_progress)
    problems += manifest_problems(path, manifest, checksums=True, progress=counter)
    if counter.bar is not None:
        counter.bar.close()
    if not manifest["checksums"]:
        notes.append(f"{path / MANIFEST_NAME}: written before checksums: sizes checked, contents cannot be")
    index_folder = path.parent.parent
    try:
        info = json.loads((path / ANN_MANIFEST).read_text())
        recorded = info.get("source")
        current = source_fingerprint(_IndexShape(_read_manifest(index_folder)))
    except DataError as error:
        problems.append(
            DataError(path / ANN_MANIFEST, f"its index folder {index_folder} cannot be read ({error})")
        )
        return problems, notes, len(manifest["files"]) + 1
    except (OSError, ValueError, KeyError, TypeError) as error:
        problems.append(DataError(path / ANN_MANIFEST, f"unreadable ({error})"))
        return problems, notes, len(manifest["files"]) + 1
    mismatch = source_mismatch(recorded, current)
    if mismatch is not None:
        problems.append(
            DataError(path / ANN_MANIFEST, f"not an ANN of {index_folder / MANIFEST}'s shards ({mismatch})")
        )
    elif isinstance(recorded, dict) and "shard_checksums" not in recorded:
        notes.append(
            f"{path / ANN_MANIFEST}: records no shard checksums (built before them): matched by shard sizes only"
        )
    return problems, notes, len(manifest["files"]) + 1


def manifest_report(folder: Path, show_progress: bool = True) -> tuple[list[DataError], list[str], int]:
    """(problems, notes, files checked) for a folder with a `manifest.json`."""
    from contriever.io import MANIFEST_NAME, manifest_problems, read_manifest

    try:
        manifest = read_manifest(folder)
    except DataError as error:
        return [error], [], 0
    counter = _progress(sum(manifest["files"].values()), folder.name, show_progress)
    problems = list(manifest_problems(folder, manifest, checksums=True, progress=counter))
    if counter.bar is not None:
        counter.bar.close()
    notes = []
    if not manifest["checksums"]:
        notes.append(f"{folder / MANIFEST_NAME}: written before checksums: sizes checked, contents cannot be")
    return problems, notes, len(manifest["files"])


def verify_folder(
    folder: str | Path, show_progress: bool = True
) -> tuple[str, list[DataError], list[str], int]:
    """`(kind, problems, notes, files checked)` for any folder contriever writes (see the module
    docstring). A folder of no known kind is one problem."""
    from contriever.io import MANIFEST_NAME
    from contriever.retrieval.ann import ANN_MANIFEST
    from contriever.retrieval.shards import MANIFEST, PLAN

    folder = Path(folder)
    if not folder.is_dir():
        return "none", [DataError(folder, "no such folder" if not folder.exists() else "not a folder")], [], 0
    if (folder / MANIFEST).is_file() or (folder / PLAN).is_file():
        return ("index", *index_report(folder, show_progress))
    if (folder / ANN_MANIFEST).is_file():
        return ("ANN", *ann_report(folder, show_progress))
    if (folder / MANIFEST_NAME).is_file():
        return ("folder", *manifest_report(folder, show_progress))
    problem = DataError(
        folder,
        f"not a folder contriever wrote, or an unfinished one (no {MANIFEST}, {ANN_MANIFEST} or {MANIFEST_NAME})",
    )
    return "none", [problem], [], 0


def report_lines(folder: str | Path, show_progress: bool = True) -> tuple[list[str], bool]:
    """(the lines `verify` prints for `folder`, whether it is good)."""
    import contriever.retrieval.ann  # noqa: F401 - imported (FAISS) before the clock starts

    started = time.perf_counter()
    kind, problems, notes, files = verify_folder(folder, show_progress)
    lines = [str(problem) for problem in problems] + [f"note: {note}" for note in notes]
    seconds = time.perf_counter() - started
    if problems:
        lines.append(f"{folder}: {len(problems)} problem(s) found in {seconds:.1f} s")
    else:
        lines.append(f"{folder}: {kind} folder good: {files} files checked in {seconds:.1f} s")
    return lines, not problems


def cmd_verify(args: argparse.Namespace) -> int:
    good = True
    for folder in args.folders:
        lines, folder_good = report_lines(folder, show_progress=not args.quiet)
        print("\n".join(lines), flush=True)
        good = good and folder_good
    return 0 if good else 2


def add_subcommand(sub, make_subcommand) -> None:
    """Register `verify` with `make_subcommand(sub, name, summary, example, handler)` (cli/options.py)."""
    p = make_subcommand(
        sub,
        "verify",
        "check every file of a folder contriever wrote (index, ANN, model, tokens, run, training) "
        "against its recorded sizes and checksums; exit 0 good, 2 damaged or not ours",
        "contriever verify indexes/scifact",
        cmd_verify,
    )
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="folders to check")
    p.add_argument("--quiet", action="store_true", help="no progress bar, even on big folders")
