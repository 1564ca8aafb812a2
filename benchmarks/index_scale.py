"""Corpora at scale (issue 8): passage counts, streamed encoding speed and memory, kill -9 + resume,
torchrun 2 processes vs 1, SciFact with Wikipedia passages as distractors.

Every step runs the real `contriever` command in a child process, timed by `/usr/bin/time` (wall
seconds, peak RSS), and writes its numbers to `benchmarks/results/index_scale/STEP.json`.

    python benchmarks/index_scale.py split                        # all enwiki passages, counted
    python benchmarks/index_scale.py encode --passages 1000       # default model, N passages
    python benchmarks/index_scale.py encode --passages 10000 --tiny   # a tiny random model (memory only)
    python benchmarks/index_scale.py kill --passages 1000 --shard-size 100
    python benchmarks/index_scale.py torchrun --passages 300
    python benchmarks/index_scale.py subset --docs 500 [--data DIR]   # DIR's test on judged + random docs
    python benchmarks/index_scale.py distractors --index IDX [--data DIR]   # SciFact test + IDX's passages
    python benchmarks/index_scale.py mixed --passages 100000      # a BEIR folder: SciFact + enwiki passages
    python benchmarks/index_scale.py prefix --index IDX --output IDX2   # the complete shards of a stopped run

`SHARED_DATA` names the data folder when it is not `../shared/data`. Inputs are the first documents of `../shared/data/enwiki-2015-sample` (in file order) making
exactly the passage count asked for (the last document cut short).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))  # ../shared/data by default
ENWIKI = sorted((DATA / "enwiki-2015-sample").glob("part-*.jsonl.gz"))
if not ENWIKI:
    sys.exit(f"no enwiki sample under {DATA}: set SHARED_DATA to the shared data folder")
RESULTS = ROOT / "benchmarks" / "results" / "index_scale"
WORK = Path(os.environ.get("INDEX_SCALE_WORK", "/tmp/index_scale"))
CONTRIEVER = str(Path(sys.executable).with_name("contriever"))


def save(name: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def timed(command: list[str], env: dict | None = None) -> dict:
    """Run `command` under /usr/bin/time: wall seconds and peak RSS (MiB) of the child."""
    report = WORK / f".time-{os.getpid()}.txt"
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", "-o", str(report), *command],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    seconds, kib = report.read_text().split()[-2:]
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(int(kib) / 1024, 1),
        "stdout": done.stdout.strip(),
    }


def corpus_prefix(passages: int, words: int = 100) -> tuple[Path, int, int]:
    """A jsonl of the first enwiki documents making exactly `passages` passages of `words` words
    (the last document is cut short where the count is reached)."""
    from contriever.data.passages import iter_documents

    path = WORK / f"enwiki-first-{passages}.jsonl"
    count = documents = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        for doc in iter_documents(ENWIKI):
            tokens = doc.text.split()
            pieces = min(-(-len(tokens) // words), passages - count)
            if not pieces:
                continue
            text = " ".join(tokens[: pieces * words])
            handle.write(json.dumps({"_id": doc.id, "title": doc.title, "text": text}) + "\n")
            count += pieces
            documents += 1
            if count >= passages:
                break
    tmp.replace(path)
    return path, documents, count


def tiny_model() -> Path:
    folder = WORK / "tiny-model"
    if not (folder / "config.json").exists():
        from contriever.model.encoder import Encoder

        Encoder.from_scratch(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, seed=0
        ).save(folder)
    return folder


def encoding_rate(folder: Path) -> dict:
    """Passages/s from the index's own log: rows over the seconds spent encoding and writing shards."""
    entries = [json.loads(line) for line in (folder / "encoding-log.jsonl").read_text().splitlines()]
    rows = sum(e["rows"] for e in entries)
    seconds = sum(e["seconds"] for e in entries)
    return {
        "shards_logged": len(entries),
        "rows": rows,
        "encode_s": round(seconds, 2),
        "passages_per_s": round(rows / seconds, 2),
    }


def folder_bytes(folder: Path) -> dict:
    sizes = {"vectors": 0, "ids": 0, "store": 0, "other": 0}
    for file in folder.iterdir():
        size = file.stat().st_size
        if file.name.startswith("embeddings-"):
            sizes["vectors"] += size
        elif file.name.startswith("ids-"):
            sizes["ids"] += size
        elif file.name == "passages.sqlite":
            sizes["store"] += size
        else:
            sizes["other"] += size
    return sizes


def index_command(corpus: Path, output: Path, model: str, shard_size: int, *extra: str) -> list[str]:
    return [
        CONTRIEVER, "index", "--corpus", str(corpus), "--model", model, "--output", str(output),
        "--words", "100", "--shard-size", str(shard_size), "--no-cache", "--quiet", *extra,
    ]  # fmt: skip


# ----- steps ------------------------------------------------------------------------------------------
def step_split(args) -> None:
    """Every enwiki document split into 100-word passages, streamed: count, time, peak RSS."""
    from contriever.data.passages import PassageSettings, ReadStats, iter_passages

    stats = ReadStats()
    started = time.perf_counter()
    words = 0
    for passage, _ in iter_passages(ENWIKI, PassageSettings(100), stats=stats):
        words += len(passage.text.split())
    seconds = time.perf_counter() - started
    save(
        "split",
        {
            "files": [p.name for p in ENWIKI],
            **stats.as_dict(),
            "words": words,
            "seconds": round(seconds, 1),
            "passages_per_s": round(stats.passages / seconds),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
    )


def step_encode(args) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    corpus, documents, passages = corpus_prefix(args.passages)
    model = str(tiny_model()) if args.tiny else "default"
    output = (
        WORK
        / f"enwiki-{args.passages}-{'tiny' if args.tiny else 'default'}-{args.shard_size}-{args.batch_size or 'budget'}"
    )
    subprocess.run(["rm", "-rf", str(output)], check=True)
    batch = ["--batch-size", str(args.batch_size)] if args.batch_size else []  # none: by token budget
    run = timed(index_command(corpus, output, model, args.shard_size, *batch))
    sizes = folder_bytes(output)
    save(
        f"encode-{args.passages}-{'tiny' if args.tiny else 'default'}-{args.shard_size}-{args.batch_size or 'budget'}",
        {
            "model": "tiny random BERT (2 layers, 32 wide)" if args.tiny else "default (all-MiniLM-L6-v2)",
            "documents": documents,
            "passages": passages,
            "shard_size": args.shard_size,
            "batch_size": args.batch_size,
            **run,
            **encoding_rate(output),
            "bytes": sizes,
            "bytes_per_passage": {k: round(v / passages, 1) for k, v in sizes.items()},
            "folder": str(output),
        },
    )


def step_kill(args) -> None:
    """SIGKILL the run once half the shards are written, run the same command again."""
    WORK.mkdir(parents=True, exist_ok=True)
    corpus, _, passages = corpus_prefix(args.passages)
    output = WORK / f"enwiki-{args.passages}-kill"
    subprocess.run(["rm", "-rf", str(output)], check=True)
    shards = -(-passages // args.shard_size)
    command = index_command(corpus, output, "default", args.shard_size)
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list(output.glob("shard-*.json"))) < shards // 2:
        time.sleep(0.5)
        if child.poll() is not None:
            sys.exit("the run ended before it could be killed")
    time.sleep(args.delay)  # into the next shard
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed_at = time.perf_counter() - started
    done_before = len(list(output.glob("shard-*.json")))
    log = [json.loads(line) for line in (output / "encoding-log.jsonl").read_text().splitlines()]
    rerun = timed(command)
    log_after = [json.loads(line) for line in (output / "encoding-log.jsonl").read_text().splitlines()][
        len(log) :
    ]
    save(
        "kill",
        {
            "passages": passages,
            "shard_size": args.shard_size,
            "shards": shards,
            "killed_after_s": round(killed_at, 1),
            "shards_complete_when_killed": done_before,
            "shards_encoded_by_rerun": len(log_after),
            "passages_encoded_twice_at_most": args.shard_size,
            "rerun": rerun,
            "index_complete": (output / "index.json").exists(),
        },
    )


def step_torchrun(args) -> None:
    import numpy as np

    from contriever.retrieval.shards import open_index

    WORK.mkdir(parents=True, exist_ok=True)
    corpus, _, passages = corpus_prefix(args.passages)
    results = {}
    for name, prefix in (
        ("one", []),
        ("two", [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--no-python"]),
    ):
        output = WORK / f"enwiki-{args.passages}-torchrun-{name}"
        subprocess.run(["rm", "-rf", str(output)], check=True)
        command = index_command(corpus, output, "default", args.shard_size)
        # torchrun gives each of its processes one thread; the single process gets both cores
        results[name] = timed(prefix + command, env={"OMP_NUM_THREADS": "1"} if prefix else None)
        results[name]["folder"] = str(output)
    one, two = open_index(results["one"]["folder"]), open_index(results["two"]["folder"])
    save(
        "torchrun",
        {
            "passages": passages,
            "shard_size": args.shard_size,
            "one_process": results["one"],
            "two_processes": results["two"],
            "wall_ratio_one_over_two": round(results["one"]["wall_s"] / results["two"]["wall_s"], 2),
            "identical_ids": one.ids == two.ids,
            "identical_vectors": bool(np.array_equal(one.embeddings(), two.embeddings())),
            "max_abs_difference": float(
                np.abs(one.embeddings().astype("f4") - two.embeddings().astype("f4")).max()
            ),
        },
    )


def step_subset(args) -> None:
    """A BEIR folder: `--data`'s test queries and qrels, and a corpus of every document judged for them
    plus random others (`--seed`) up to `--docs`, in corpus order."""
    import random

    from contriever.data.beir import corpus_file, load_qrels
    from contriever.data.passages import iter_documents

    data = Path(args.data)
    corpus = corpus_file(data)
    qrels = load_qrels(data, "test")
    judged = {d for docs in qrels.values() for d in docs}
    ids = [doc.id for doc in iter_documents([corpus])]
    others = sorted(set(ids) - judged)
    keep = judged | set(random.Random(args.seed).sample(others, max(0, args.docs - len(judged))))
    name = data.name if data.parent == DATA else f"{data.parent.name}-{data.name}"
    folder = WORK / f"{name}-{args.docs}"
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as handle:
        for doc in iter_documents([corpus]):
            if doc.id in keep:
                handle.write(json.dumps({"_id": doc.id, "title": doc.title, "text": doc.text}) + "\n")
    (folder / "queries.jsonl").write_bytes((data / "queries.jsonl").read_bytes())
    (folder / "qrels" / "test.tsv").write_bytes((data / "qrels" / "test.tsv").read_bytes())
    save(
        f"subset-{name}-{args.docs}" if name != "scifact" else f"subset-{args.docs}",
        {"folder": str(folder), "documents": len(keep), "judged": len(judged & set(ids)), "seed": args.seed},
    )


def step_mixed(args) -> None:
    """A BEIR folder: SciFact's corpus (documents whole) followed by the first `--passages` 100-word
    Wikipedia passages (ids `enwiki-DOCID#N`, so they never collide with SciFact's), with SciFact's
    test queries and qrels: retrieval at scale on a judged task, through the unchanged commands."""
    from contriever.data.passages import PassageSettings, iter_documents, iter_passages

    scifact = Path(args.data)
    folder = WORK / f"scifact+enwiki-{args.passages}"
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    tmp = folder / "corpus.jsonl.tmp"
    documents = passages = 0
    with open(tmp, "w") as handle:
        for doc in iter_documents([scifact / "corpus.jsonl.gz"]):
            handle.write(json.dumps({"_id": doc.id, "title": doc.title, "text": doc.text}) + "\n")
            documents += 1
        for passage, _ in iter_passages(ENWIKI, PassageSettings(100)):
            if passages == args.passages:
                break
            line = {"_id": f"enwiki-{passage.id}", "title": passage.title, "text": passage.text}
            handle.write(json.dumps(line) + "\n")
            passages += 1
    tmp.replace(folder / "corpus.jsonl")
    (folder / "queries.jsonl").write_bytes((scifact / "queries.jsonl").read_bytes())
    (folder / "qrels" / "test.tsv").write_bytes((scifact / "qrels" / "test.tsv").read_bytes())
    save(
        f"mixed-{args.passages}",
        {"folder": str(folder), "scifact_documents": documents, "enwiki_passages": passages},
    )


def step_prefix(args) -> None:
    """An index folder of the first complete shards of another, still unfinished, one (hard links):
    what a run stopped for lack of time has encoded, made searchable, with the passage store cut to
    the same rows. The manifest says which folder and how many of its shards it holds."""
    import shutil
    import sqlite3

    from contriever.retrieval.shards import PLAN, STORE, read_shard_record, record_name, write_manifest

    source, target = Path(args.index), Path(args.output)
    plan = json.loads((source / PLAN).read_text())
    records = []
    while len(records) < plan["shards"] and (record := read_shard_record(source, len(records))):
        records.append(record)
    if not records:
        sys.exit(f"{source}: shard 0 is not complete yet")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for record in records:
        for name in (record["ids"], record["vectors"], record_name(record["number"])):
            os.link(source / name, target / name)
    rows = sum(r["rows"] for r in records)
    shutil.copyfile(source / STORE, target / STORE)
    with sqlite3.connect(target / STORE) as db:
        db.execute("DELETE FROM passages WHERE row >= ?", (rows,))
    db.close()
    settings = plan["settings"]
    write_manifest(
        target,
        records,
        dim=settings["dim"],
        dtype=settings["dtype"],
        metadata={
            **settings,
            "prefix_of": str(source),
            "prefix_shards": f"{len(records)} of {plan['shards']}",
        },
        extra={"store": STORE},
    )
    save(
        f"prefix-{target.name}",
        {
            "source": str(source),
            "shards": f"{len(records)} of {plan['shards']}",
            "rows": rows,
            "folder": str(target),
        },
    )


def step_distractors(args) -> None:
    """SciFact test queries over SciFact's corpus plus the passages of `--index` (exact search over
    both folders, top k merged), against SciFact alone."""
    import numpy as np

    from contriever.data.beir import CORPUS_NAMES, _find_file, load_qrels, load_queries
    from contriever.evaluation.metrics import evaluate_run
    from contriever.model.encoder import Encoder
    from contriever.retrieval.encode import cached_index
    from contriever.retrieval.runs import run_from_search
    from contriever.retrieval.shards import open_index

    scifact = Path(args.data)
    encoder = Encoder.load()
    if args.base_index:  # SciFact's own index folder, e.g. the encode cache entry `evaluate` made
        folder = Path(args.base_index)
    else:
        folder, _, _ = cached_index([_find_file(scifact, CORPUS_NAMES, "corpus")], encoder, model="default")
    indexes = [open_index(folder), open_index(args.index)]
    qrels = load_qrels(scifact, "test")
    queries = {q: t for q, t in load_queries(scifact).items() if q in qrels}
    vectors = encoder.encode_queries(list(queries.values()), show_progress=False)
    k = 1001
    found = [index.search(vectors, k) for index in indexes]
    results = {}
    for name, parts in (("scifact_only", found[:1]), ("with_distractors", found)):
        scores = np.concatenate([s for s, _ in parts], axis=1)
        ids = [sum((p[1][i] for p in parts), []) for i in range(len(queries))]
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        ranked_ids = [[ids[i][j] for j in row] for i, row in enumerate(order)]
        run = run_from_search(list(queries), np.take_along_axis(scores, order, axis=1), ranked_ids, 1000)
        metrics = evaluate_run(qrels, run)
        distractors_top10 = np.mean([sum("#" in d for d in list(run[q])[:10]) for q in run])
        results[name] = {
            **{m: round(100 * v, 2) for m, v in metrics.items()},
            "distractors_in_top10": distractors_top10,
        }
    save(
        "distractors",
        {
            "scifact_documents": len(indexes[0]),
            "distractor_passages": len(indexes[1]),
            "distractor_index": str(args.index),
            **results,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("split").set_defaults(func=step_split)
    for name, func in (("encode", step_encode), ("kill", step_kill), ("torchrun", step_torchrun)):
        p = sub.add_parser(name)
        p.add_argument("--passages", type=int, default=1000)
        p.add_argument("--shard-size", type=int, default=250)
        p.add_argument("--batch-size", type=int, help="texts a batch (default: the token budget)")
        p.set_defaults(func=func)
        if name == "encode":
            p.add_argument(
                "--tiny", action="store_true", help="a tiny random model (memory and overheads only)"
            )
        if name == "kill":
            p.add_argument(
                "--delay", type=float, default=3.0, help="seconds into the next shard before SIGKILL"
            )
    p = sub.add_parser("distractors")
    p.add_argument("--index", required=True, help="an index folder of distractor passages")
    p.add_argument("--data", default=str(DATA / "scifact"), help="the BEIR folder (SciFact or a subset)")
    p.add_argument("--base-index", help="the BEIR folder's index (default: encode it through the cache)")
    p.set_defaults(func=step_distractors)
    p = sub.add_parser("prefix")
    p.add_argument("--index", required=True, help="an index folder still being encoded (or stopped)")
    p.add_argument("--output", required=True, help="the index folder of its first complete shards")
    p.set_defaults(func=step_prefix)
    p = sub.add_parser("mixed")
    p.add_argument("--passages", type=int, default=100_000)
    p.add_argument("--data", default=str(DATA / "scifact"), help="SciFact's BEIR folder")
    p.set_defaults(func=step_mixed)
    p = sub.add_parser("subset")
    p.add_argument("--docs", type=int, default=500)
    p.add_argument("--data", default=str(DATA / "scifact"), help="a BEIR folder with test qrels")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=step_subset)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
