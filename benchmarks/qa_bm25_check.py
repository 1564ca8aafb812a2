"""An independent BM25 on the same passages, to check evaluate-qa's BM25 top-k accuracy against.

Independent of bm25s (which `contriever.retrieval.bm25` wraps): the scoring is written here with
scipy sparse matrices, Lucene's BM25 (pyserini's parameters k1 0.9, b 0.4):

    score(q, d) = sum over query tokens t of  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

with a tokenizer following the same rules as ours (lowercase, tokens of two or more word characters,
the English stop words of bm25s's list, PyStemmer's Porter stemmer) but not its code. A passage is
`title + " " + text`, as our BM25 reads it; the answers are matched by the same DPR rule
(`contriever.evaluation.qa_eval.hit_ranks`). It prints top-k per question file and, given
`--ours metrics.json` (an evaluate-qa output with a `bm25` system), the differences.

    python benchmarks/qa_bm25_check.py --questions ../shared/data/qa/nq-test.jsonl ../shared/data/qa/trivia-test.jsonl \
        --corpus ../shared/data/enwiki-2015-sample/part-0*.jsonl.gz --words 100 \
        --ours /tmp/qa-work/out-enwiki-bm25/metrics.json --output /tmp/qa-work/bm25-check.json
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import sparse
from tqdm.auto import tqdm

from contriever.evaluation.qa import accuracy_from_ranks
from contriever.evaluation.qa_eval import hit_ranks, load_question_sets, read_corpus

K1, B = 0.9, 0.4
TOKEN = re.compile(r"(?u)\b\w\w+\b")


class Tokenizer:
    def __init__(self):
        import Stemmer
        from bm25s.stopwords import STOPWORDS_EN

        self.stemmer = Stemmer.Stemmer("porter")
        self.stop = set(STOPWORDS_EN)
        self.cache: dict[str, str] = {}

    def __call__(self, text: str) -> list[str]:
        words = [w for w in TOKEN.findall(text.lower()) if w not in self.stop]
        out = []
        for word in words:
            stem = self.cache.get(word)
            if stem is None:
                stem = self.cache[word] = self.stemmer.stemWord(word)
            out.append(stem)
        return out


def build(docs: list[str], tokenize: Tokenizer) -> tuple[sparse.csr_matrix, dict[str, int]]:
    """The documents x terms matrix of BM25 weights (idf times saturated term frequency)."""
    vocab: dict[str, int] = {}
    indptr, indices, counts, lengths = [0], [], [], []
    for text in tqdm(docs, desc="tokenizing", mininterval=2):
        tokens = tokenize(text)
        lengths.append(len(tokens))
        for term, count in Counter(tokens).items():
            indices.append(vocab.setdefault(term, len(vocab)))
            counts.append(count)
        indptr.append(len(indices))
    tf = sparse.csr_matrix(
        (np.asarray(counts, np.float32), np.asarray(indices, np.int32), np.asarray(indptr, np.int64)),
        shape=(len(docs), len(vocab)),
    )
    n = len(docs)
    df = np.bincount(tf.indices, minlength=len(vocab)).astype(np.float64)
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
    lengths = np.asarray(lengths, np.float32)
    norm = K1 * (1 - B + B * lengths / lengths.mean())
    rows = np.repeat(np.arange(n), np.diff(tf.indptr))
    tf.data = tf.data / (tf.data + norm[rows]) * idf[tf.indices]
    return tf, vocab


def search(
    weights: sparse.csr_matrix, vocab: dict[str, int], queries: list[str], tokenize, k: int, block=256
):
    """Row ids of each query's k best documents (documents sharing no term are left out)."""
    by_term = weights.T.tocsr()  # terms x documents: a query's rows summed
    results = []
    for start in tqdm(range(0, len(queries), block), desc="searching", mininterval=2):
        rows, cols, vals = [], [], []
        for i, query in enumerate(queries[start : start + block]):
            for term, count in Counter(tokenize(query)).items():
                if term in vocab:
                    rows.append(i)
                    cols.append(vocab[term])
                    vals.append(count)
        q = sparse.csr_matrix(
            (vals, (rows, cols)), shape=(min(block, len(queries) - start), len(vocab)), dtype=np.float32
        )
        scores = (q @ by_term).tocsr()
        for i in range(scores.shape[0]):
            row = scores.getrow(i)
            if row.nnz == 0:
                results.append([])
                continue
            top = np.argsort(-row.data, kind="stable")[:k]
            results.append(row.indices[top].tolist())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", nargs="+", required=True)
    parser.add_argument("--corpus", nargs="+", required=True)
    parser.add_argument("--words", type=int, default=100)
    parser.add_argument("--ours", type=Path, help="evaluate-qa metrics.json with a bm25 system, to compare")
    parser.add_argument("--output", type=Path, help="JSON file for the results")
    args = parser.parse_args()
    started = time.perf_counter()
    passages = read_corpus(args.corpus, args.words)
    tokenize = Tokenizer()
    weights, vocab = build(
        [f"{t} {x}" if t else x for t, x in zip(passages.titles, passages.texts)], tokenize
    )
    texts = passages.text_of()
    ours = json.loads(args.ours.read_text()) if args.ours else None
    report = {"k1": K1, "b": B, "passages": len(passages), "sets": {}}
    for qset in load_question_sets(args.questions, keep_bad_regex=True):
        found = search(weights, vocab, [q.question for q in qset.questions], tokenize, 100)
        ranks = hit_ranks(qset.questions, [[passages.ids[r] for r in rows] for rows in found], texts)
        accuracy = accuracy_from_ranks(ranks, (1, 5, 20, 100))
        entry = {"independent": accuracy}
        line = f"{qset.name:<14}" + "".join(f"  top-{k[3:]} {100 * v:5.1f}" for k, v in accuracy.items())
        if ours and "bm25" in ours["sets"].get(qset.name, {}).get("systems", {}):
            theirs = ours["sets"][qset.name]["systems"]["bm25"]
            entry["ours"] = {k: theirs[k] for k in accuracy}
            line += "   ours:" + "".join(f"  top-{k[3:]} {100 * theirs[k]:5.1f}" for k in accuracy)
            line += "   diff:" + "".join(f" {100 * (theirs[k] - v):+5.1f}" for k, v in accuracy.items())
        report["sets"][qset.name] = entry
        print(line, flush=True)
    report["total_s"] = round(time.perf_counter() - started, 1)
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
