"""Before/after measurement of mContriever-style training of the multilingual model (issue 18).

Two test beds, per language, each through the unchanged `contriever evaluate` (one process at a time;
the corpus is encoded once per model and reused from the encode cache for the other languages). On the
shared 2-core CPU the 12-layer model encodes a few hundred texts a minute, so both are documented,
seeded subsets (`subset`, seed 18) written under $MCONTRIEVER_WORK (default /work/mdata/eval):

* XQuAD (out of domain), ar de en es ru zh: `--xquad-queries` questions (the same SQuAD ids in every
  language: XQuAD is parallel) against one English corpus of their gold paragraphs plus random other
  SQuAD dev paragraphs, `--xquad-docs` in all (the full set: 1,190 questions, 2,067 paragraphs).
* debian-xling (in domain), `--languages`: `--queries` queries a language (`random.Random(f"18-LANG")`)
  against one English corpus of their target descriptions plus random others, `--docs` in all.

    python benchmarks/mcontriever_eval.py subset            # 300 XQuAD questions / 400 paragraphs; 4 x 50 / 500
    python benchmarks/mcontriever_eval.py evaluate --model MODEL --name before      # results/mcontriever/before.json
    python benchmarks/mcontriever_eval.py table before after                      # the markdown table
    python benchmarks/mcontriever_eval.py paired before after     # per-query change, mean +- standard error

Documents are truncated at `--max-length` tokens (256; 0: the model's own 512). Prompts are the ones
the evaluated model records (the converted multilingual model and what is trained from it: E5's
`query: ` / `passage: `); the first run (session 11) had no prompt support and measured without.
Numbers are nDCG@10 x 100 (and R@100), pytrec_eval, as `contriever evaluate` writes them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results" / "mcontriever"
WORK = Path(os.environ.get("MCONTRIEVER_WORK", "/work/mdata/eval"))
CONTRIEVER = str(Path(sys.executable).with_name("contriever"))
XQUAD_LANGUAGES = ["ar", "de", "en", "es", "ru", "zh"]
# (folder under WORK, name in the results): the random debian-xling subset scores 100 for every language
# before training (too easy to show a change): `--beds xquad_full,debian_xling_hard` measures a change.
BEDS = [
    ("xquad-subset", "xquad"),
    ("xquad-full", "xquad_full"),
    ("xling-subset", "debian_xling"),
    ("xling-hard", "debian_xling_hard"),
]


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_subset(folder: Path, corpus: list[dict], keep: set[str], queries: dict, qrels: dict) -> None:
    """folder/LANG BEIR folders over one shared corpus.jsonl (hard-linked into each), corpus order kept."""
    folder.mkdir(parents=True, exist_ok=True)
    shared = folder / "corpus.jsonl"
    with open(shared, "w", encoding="utf-8") as handle:
        for doc in corpus:
            if doc["_id"] in keep:
                handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
    for lang in queries:
        (folder / lang / "qrels").mkdir(parents=True, exist_ok=True)
        link = folder / lang / "corpus.jsonl"
        link.unlink(missing_ok=True)
        os.link(shared, link)
        (folder / lang / "queries.jsonl").write_text(
            "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in queries[lang]), encoding="utf-8"
        )
        (folder / lang / "qrels" / "test.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels[lang].items())
        )


def read_qrels(folder: Path) -> dict[str, str]:
    rows = (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]
    return {q: d for q, d, _ in (row.split("\t") for row in rows)}


def write_hard_subset(xling: Path, corpus: list[dict], queries: dict, qrels: dict, pool_k: int) -> dict:
    """WORK/xling-hard/LANG: the same queries over their targets + each query's BM25 top `pool_k` of the
    full 60,000-document corpus (bm25s, no stemmer, no stop words: the queries are not English), so
    the distractors are the near-duplicate descriptions of sibling packages BM25 confuses."""
    from contriever.retrieval.bm25 import bm25_search, build_bm25

    index = build_bm25({d["_id"]: d for d in corpus}, stemmer=None, stopwords=None, show_progress=False)
    pool = {d for per_lang in qrels.values() for d in per_lang.values()}
    for lang in queries:
        run = bm25_search(index, {q["_id"]: q["text"] for q in queries[lang]}, k=pool_k, show_progress=False)
        pool |= {d for docs in run.values() for d in docs}
    write_subset(WORK / "xling-hard", corpus, pool, queries, qrels)
    return {"documents": len(pool), "bm25_top_k": pool_k}


def link_full_xquad(xquad: Path) -> None:
    """WORK/xquad-full/LANG: every language's 1,190 questions and qrels beside en's corpus file. The
    six folders hold the same 2,067 paragraphs, but es/ru/zh in gzip files of other bytes, which the
    encode cache (keyed by the corpus file's bytes) would encode again for each."""
    for lang in XQUAD_LANGUAGES:
        folder = WORK / "xquad-full" / lang
        folder.mkdir(parents=True, exist_ok=True)
        for name, source in [
            ("corpus.jsonl.gz", xquad / "en" / "corpus.jsonl.gz"),
            ("queries.jsonl", xquad / lang / "queries.jsonl"),
            ("qrels", xquad / lang / "qrels"),
        ]:
            if not (folder / name).exists():
                (folder / name).symlink_to(source.resolve())


def step_subset(args) -> None:
    """WORK/xquad-subset/LANG and WORK/xling-subset/LANG: the test beds at a size this CPU can encode
    (and WORK/xquad-full/LANG, the whole of XQuAD, for a machine that can)."""
    # XQuAD: its questions are parallel (one SQuAD id in every language), so the same sampled ids in
    # every language; corpus = their gold paragraphs + random other SQuAD dev paragraphs.
    xquad = DATA / "xquad"
    ids = sorted(read_qrels(xquad / "en"))
    picked = set(random.Random(f"{args.seed}-xquad").sample(ids, min(args.xquad_queries, len(ids))))
    queries, qrels = {}, {}
    for lang in XQUAD_LANGUAGES:
        queries[lang] = [q for q in read_jsonl(xquad / lang / "queries.jsonl") if q["_id"] in picked]
        qrels[lang] = {q: d for q, d in read_qrels(xquad / lang).items() if q in picked}
    judged = set(qrels["en"].values())
    corpus = read_jsonl(xquad / "en" / "corpus.jsonl.gz")
    others = sorted({doc["_id"] for doc in corpus} - judged)
    keep = judged | set(random.Random(args.seed).sample(others, max(0, args.xquad_docs - len(judged))))
    write_subset(WORK / "xquad-subset", corpus, keep, queries, qrels)
    link_full_xquad(xquad)
    summary = {"xquad": {"queries_per_language": len(picked), "documents": len(keep), "judged": len(judged)}}

    # debian-xling: per language its own sampled queries; corpus = their targets + random others.
    xling = DATA / "debian-xling"
    queries, qrels = {}, {}
    for lang in args.languages.split(","):
        all_queries = read_jsonl(xling / lang / "queries.jsonl")
        queries[lang] = random.Random(f"{args.seed}-{lang}").sample(
            all_queries, min(args.queries, len(all_queries))
        )
        lang_qrels = read_qrels(xling / lang)
        qrels[lang] = {q["_id"]: lang_qrels[q["_id"]] for q in queries[lang]}
    judged = {d for per_lang in qrels.values() for d in per_lang.values()}
    corpus = read_jsonl(xling / "corpus.jsonl.gz")
    others = sorted({doc["_id"] for doc in corpus} - judged)
    keep = judged | set(random.Random(args.seed).sample(others, max(0, args.docs - len(judged))))
    write_subset(WORK / "xling-subset", corpus, keep, queries, qrels)
    summary["debian_xling"] = {
        "queries_per_language": {lang: len(q) for lang, q in queries.items()},
        "documents": len(keep),
        "judged": len(judged),
    }
    summary["debian_xling"]["hard"] = write_hard_subset(xling, corpus, queries, qrels, args.pool_k)
    summary["seed"] = args.seed
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.summary}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


def evaluate_one(model: str, data: Path, output: Path, max_length: int | None) -> dict:
    command = [CONTRIEVER, "evaluate", "--data", str(data), "--model", model, "--output", str(output)]
    if max_length:  # 0: the model's own
        command += ["--max-length", str(max_length)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    metrics = json.loads((output / "metrics.json").read_text())
    return {
        "ndcg@10": round(100 * metrics["ndcg@10"], 2),
        "recall@100": round(100 * metrics["recall@100"], 2),
        "mrr@10": round(100 * metrics["mrr@10"], 2),
        "seconds": round(time.perf_counter() - started, 1),
    }


def step_evaluate(args) -> None:
    """XQuAD and the debian-xling subset, every language, one model; results/mcontriever/NAME.json."""
    out = RESULTS / f"{args.name}.json"
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update({"model": args.model, "max_length": args.max_length, "xquad": result.get("xquad", {})})
    chosen = [(folder, bed) for folder, bed in BEDS if bed in args.beds.split(",")]
    if not all((WORK / folder).exists() for folder, _ in chosen):
        sys.exit(f"{WORK}: a chosen test bed is missing; run `python {sys.argv[0]} subset` first")
    beds = []
    for folder, bed in chosen:
        result[bed] = result.get(bed, {})
        beds += [(bed, d.name, d) for d in sorted((WORK / folder).iterdir()) if d.is_dir()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    for bed, lang, data in beds:
        if lang in result[bed]:
            continue  # measured already (a rerun resumes)
        result[bed][lang] = evaluate_one(
            args.model, data, WORK / args.name / f"{bed}-{lang}", args.max_length
        )
        print(bed, lang, result[bed][lang], flush=True)
        out.write_text(json.dumps(result, indent=1) + "\n")


def step_table(args) -> None:
    """Markdown: one row per (test bed, language), nDCG@10 of each named result, and the change."""
    runs = {name: json.loads((RESULTS / f"{name}.json").read_text()) for name in args.names}
    first, last = args.names[0], args.names[-1]
    print("| test bed | language | " + " | ".join(args.names) + f" | change ({last} - {first}) |")
    print("|---|---|" + "---:|" * (len(args.names) + 1))
    for bed in [b for _, b in BEDS]:
        languages = list(runs[first].get(bed, {}))
        if not languages:
            continue
        for lang in languages + ["mean"]:
            if lang == "mean":
                values = [
                    sum(r[bed][x]["ndcg@10"] for x in languages) / len(languages)
                    if all(x in r.get(bed, {}) for x in languages)
                    else float("nan")
                    for r in runs.values()
                ]
            else:
                values = [r.get(bed, {}).get(lang, {}).get("ndcg@10", float("nan")) for r in runs.values()]
            cells = " | ".join(f"{v:.2f}" for v in values)
            print(f"| {bed} | {lang} | {cells} | {values[-1] - values[0]:+.2f} |")


def read_run(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, {})[doc] = float(score)
    return run


def step_paired(args) -> None:
    """Per-query nDCG@10 change (second name minus first), mean +- standard error, queries better/worse."""
    import statistics

    import pytrec_eval

    first, second = args.names
    for folder, bed in BEDS:
        for data in (
            sorted(d for d in (WORK / folder).iterdir() if d.is_dir()) if (WORK / folder).exists() else []
        ):
            runs = [WORK / name / f"{bed}-{data.name}" / "run.trec" for name in (first, second)]
            if not all(path.exists() for path in runs):
                continue
            qrels: dict[str, dict[str, int]] = {}
            for row in (data / "qrels" / "test.tsv").read_text().splitlines()[1:]:
                qid, doc, score = row.split("\t")
                qrels.setdefault(qid, {})[doc] = int(score)
            evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
            before, after = (evaluator.evaluate(read_run(path)) for path in runs)
            diffs = [100 * (after[q]["ndcg_cut_10"] - before[q]["ndcg_cut_10"]) for q in qrels]
            error = statistics.stdev(diffs) / len(diffs) ** 0.5
            better, worse = sum(d > 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs)
            print(
                f"| {bed} | {data.name} | {statistics.mean(diffs):+.2f} +- {error:.2f} | {better} | {worse} |"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("subset")
    p.add_argument(
        "--xquad-queries", type=int, default=300, help="XQuAD questions (the same in every language)"
    )
    p.add_argument("--xquad-docs", type=int, default=400, help="SQuAD dev paragraphs: gold ones + random")
    p.add_argument("--languages", default="de,fr,ja,ru", help="debian-xling languages")
    p.add_argument("--queries", type=int, default=50, help="debian-xling queries a language")
    p.add_argument("--docs", type=int, default=500, help="debian-xling documents: targets + random")
    p.add_argument("--pool-k", type=int, default=5, help="hard debian-xling subset: BM25 top k a query")
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--summary", default="subsets", help="results/mcontriever/SUMMARY.json: sizes and seed")
    p.set_defaults(func=step_subset)
    p = sub.add_parser("evaluate")
    p.add_argument("--model", required=True)
    p.add_argument("--name", required=True)
    p.add_argument(
        "--beds", default="xquad,debian_xling", help="comma-separated: " + ",".join(b for _, b in BEDS)
    )
    p.add_argument("--max-length", type=int, default=256, help="token limit (0: the model's own)")
    p.set_defaults(func=step_evaluate)
    p = sub.add_parser("table")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=step_table)
    p = sub.add_parser("paired")
    p.add_argument("names", nargs=2)
    p.set_defaults(func=step_paired)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
