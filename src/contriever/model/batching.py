"""Encoding batches cut by a token budget, and the budget this kind of device runs best at.

A batch of texts costs its padded tokens (rows x its longest text), and its activations are bounded
by them too, so `token_batches` sorts texts by length and cuts batches whose padded size stays
within a budget: short texts go in large batches, long ones in small batches, and memory is bounded
by the budget whatever the corpus (a count of texts lets one batch of long texts take many times
the memory of the others).

The best budget depends on the device (cache sizes, threads, bf16 units): `token_budget(device)`
reads it from `token-budget.json` in the encode cache (`contriever.retrieval.encode.cache_dir`),
keyed by the device kind, and `measure_token_budget(encoder)` measures it (the model's forward pass
on batches of each candidate budget, interleaved, best of several rounds) and records it. `encode`
measures on first use of a device kind when a corpus is large enough for the few seconds it takes
to pay back; `--batch-size N` still cuts batches of N texts instead.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FILE = "token-budget.json"
# Before a measurement: the budgets that ran best when measured (benchmarks/README.md, "Encoding at the
# machine's rate"); memory of a batch is bounded by them.
DEFAULT_TOKEN_BUDGET = {"cpu": 8192, "cuda": 65536}
CANDIDATES = {"cpu": (2048, 4096, 8192, 16384), "cuda": (16384, 32768, 65536, 131072)}
MEASURE_LENGTH = 256  # tokens a text in the measurement (capped at the model's max length)
MEASURE_TOKENS = 8192  # at least this many a budget a round: one pass of 2,048 was too short to time


def round_up(length: int, multiple: int) -> int:
    """`length` rounded up to a multiple of `multiple`."""
    return -(-length // multiple) * multiple


def token_batches(
    lengths: Sequence[int], budget: int, max_rows: int | None = None, multiple: int = 1
) -> list[np.ndarray]:
    """Positions into `lengths`, longest first, cut into batches of at most `budget` padded tokens
    (rows x the batch's longest length rounded up to `multiple`; a text longer than the budget goes
    alone) and at most `max_rows` rows. Equal lengths keep their input order."""
    if budget < 1:
        raise ValueError(f"token budget must be at least 1, got {budget}")
    if multiple < 1:
        raise ValueError(f"length multiple must be at least 1, got {multiple}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        rows = max(1, budget // round_up(max(1, int(lengths[order[start]])), multiple))  # the first row's
        if max_rows is not None:
            rows = min(rows, max_rows)
        batches.append(order[start : start + rows])
        start += rows
    return batches


def device_kind(device) -> str:
    """What the best budget depends on: the processor (or GPU) model, its instruction set, threads."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{device.type}:{name}:{torch.backends.cpu.get_cpu_capability()}:{torch.get_num_threads()} threads"


def _record_path() -> Path | None:
    from contriever.io import cache_dir

    root = cache_dir()
    return None if root is None else root / FILE


def _read_records(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or damaged: measured again
        return {}
    return records if isinstance(records, dict) else {}


def recorded_budget(device) -> int | None:
    """The budget measured for this device kind, None when none was recorded (or the cache is off)."""
    entry = _read_records(_record_path()).get(device_kind(device))
    try:
        return int(entry["budget"]) if entry else None
    except (KeyError, TypeError, ValueError):
        return None


def token_budget(device) -> int:
    """The budget to encode with on `device`: the measured one, else the default for its type."""
    import torch

    return recorded_budget(device) or DEFAULT_TOKEN_BUDGET.get(torch.device(device).type, 8192)


def record_budget(device, result: dict) -> Path | None:
    """Keep a measurement (`measure_token_budget`'s result) for this device kind in the cache."""
    from contriever.io import write_json

    path = _record_path()
    if path is None:
        return None
    records = _read_records(path)
    records[device_kind(device)] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, records)
    return path


BUDGET_TOLERANCE = 0.03  # within this of the fastest, a budget is as fast: repeated measurements vary ~3%


def choose_budget(tokens_per_s: dict[int, float]) -> int:
    """The smallest budget within `BUDGET_TOLERANCE` of the fastest: as fast within the measurement's
    noise, and less memory (SciFact's `make run` peaked at 942 MiB with 4,096 tokens, 1,110 MiB
    with 8,192, at the same speed)."""
    fastest = max(tokens_per_s.values())
    return min(budget for budget, rate in tokens_per_s.items() if rate >= (1 - BUDGET_TOLERANCE) * fastest)


def measure_token_budget(
    encoder, budgets: Sequence[int] | None = None, *, rounds: int = 2, record: bool = True
) -> dict:
    """Tokens/s of `encoder`'s forward pass at each budget (texts of `MEASURE_LENGTH` tokens, the
    budgets interleaved round by round so a change of load hits them all, the best round of each);
    the fastest budget (`choose_budget`) is recorded for this device kind unless `record` is false.

    It times the forward `Encoder.encode` runs (the transformers one, `packed.disabled()`), each
    budget over at least `MEASURE_TOKENS` tokens a round, after a first round that meets every
    shape once (a first call per shape pays for building its kernels)."""
    import torch

    from contriever.model import packed
    from contriever.model.precision import autocast_context

    device = encoder.device
    budgets = list(budgets or CANDIDATES.get(device.type, CANDIDATES["cpu"]))
    length = min(MEASURE_LENGTH, int(encoder.max_length))
    generator = torch.Generator().manual_seed(0)
    low = 1000 if len(encoder.tokenizer) > 2000 else 0  # past the special tokens of a WordPiece vocabulary
    ids = torch.randint(
        low, len(encoder.tokenizer), (max(budgets) // length + 1, length), generator=generator
    )
    best = dict.fromkeys(budgets, 0.0)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode(), autocast_context(device, "auto"), packed.disabled():
            for round_ in range(rounds + 1):
                for budget in budgets:
                    rows = max(1, budget // length)
                    batch = ids[:rows].to(device)
                    passes = max(1, MEASURE_TOKENS // (rows * length)) if round_ else 1
                    started = time.perf_counter()
                    for _ in range(passes):
                        encoder(batch, torch.ones_like(batch))
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    if round_:  # the first round warms up
                        tokens = passes * rows * length
                        best[budget] = max(best[budget], tokens / (time.perf_counter() - started))
    finally:
        encoder.train(was_training)
    fastest = choose_budget(best)
    result = {
        "budget": fastest,
        "tokens_per_s": {str(b): round(v, 1) for b, v in best.items()},
        "length": length,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pid": os.getpid(),
    }
    if record:
        record_budget(device, result)
    return result


MEASURE_AFTER = 4096  # texts: a smaller job encodes with the default budget rather than wait to measure


def ensure_token_budget(encoder, texts: int) -> int:
    """The budget for `encoder`'s device, measured first when this device kind has none recorded and
    `texts` are enough to pay back the measurement (a few seconds); the default otherwise."""
    budget = recorded_budget(encoder.device)
    if budget is None and texts >= MEASURE_AFTER and _record_path() is not None:
        budget = measure_token_budget(encoder)["budget"]
    return budget or token_budget(encoder.device)
