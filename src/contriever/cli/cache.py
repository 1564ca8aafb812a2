"""`contriever cache`: list (or clear) the encode cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_cache(args: argparse.Namespace) -> int:
    import shutil

    from contriever.retrieval.encode import cache_dir

    root = cache_dir()
    if root is None:
        print("the encode cache is off ($CONTRIEVER_CACHE=off)")
        return 0
    entries = sorted((root / "encodings").glob("*")) if (root / "encodings").is_dir() else []
    queries = sorted((root / "queries").glob("*.npy")) if (root / "queries").is_dir() else []
    total = 0
    for entry in entries:
        size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        total += size
        try:
            settings = json.loads((entry / "encoding.json").read_text())["settings"]
            what = f"{settings['model']}  {Path(settings['input_files'][0]['path']).name}  words={settings['passages']['words']}"
        except (OSError, ValueError, KeyError, IndexError):
            what = "(no plan)"
        print(f"{size / 2**20:9.1f} MiB  {entry.name}  {what}")
    print(f"{total / 2**20:9.1f} MiB in {len(entries)} encodings under {root / 'encodings'}")
    query_bytes = sum(path.stat().st_size for path in queries)
    print(f"{query_bytes / 2**20:9.1f} MiB in {len(queries)} query sets under {root / 'queries'}")
    if args.clear and (entries or queries):
        for folder in ("encodings", "queries"):
            shutil.rmtree(root / folder, ignore_errors=True)
        print("cleared")
    return 0


def add_subcommand(sub, make_subcommand) -> None:
    p = make_subcommand(
        sub,
        "cache",
        "list (or --clear) the encode cache ($CONTRIEVER_CACHE, ~/.cache/contriever)",
        "contriever cache --clear",
        cmd_cache,
    )
    p.add_argument("--clear", action="store_true", help="delete every cached encoding")
