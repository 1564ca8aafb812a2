"""Streamed, sharded, resumable encoding of a corpus into an index folder (`retrieval/shards.py`).

`build_index(inputs, encoder, output)` runs in four steps, each safe to kill and re-run:

1. **Plan.** The settings that make the vectors (model and a hash of its files, pooling,
   normalization, max length, precision, passage settings, a hash of the input files' bytes, shard
   size, dtype) are compared with the folder's `encoding.json` (or `index.json`): any difference is
   an error naming the keys, never a silent mix of two indexes.
2. **Passage store.** The inputs are streamed once into `passages.sqlite` (`retrieval/store.py`),
   split into passages (`data/passages.py`); bad lines, empty texts and duplicate ids are found here,
   before any encoding. The passage count fixes the shards: shard `s` holds rows
   `[s * shard_rows, (s + 1) * shard_rows)`. The first process to get here writes the store and the
   plan; the others wait for it.
3. **Shards.** Process `I` of `N` encodes the shards `s` with `s % N == I` that are not complete
   yet, reading their texts from the store by row range, and writes each (ids, fp16 vectors, record)
   atomically. Every shard is encoded exactly once whatever `N` and the passage count, and a shard's
   vectors do not depend on which process made them (its batches are cut from the shard alone,
   sorted by length within blocks of 8 batches). A kill loses at most the shard being encoded. `N`
   comes from `--shard I/N` or from torchrun's `RANK`/`WORLD_SIZE` (both together: part
   `I * WORLD_SIZE + RANK` of `N * WORLD_SIZE`).
4. **Manifest.** The process that finds every shard complete writes `index.json`: the folder is a
   searchable index from then on (`open_index`). Re-running a finished command does nothing.

Locks: a single-process run holds the folder exclusively; parts hold it shared plus their own part
exclusively, so a second command writing the same folder (or the same part) is refused at once.

The encode cache: the same settings on the same bytes give the same vectors, so finished shards are
kept (hard links, no extra disk where the filesystem allows) under `cache_dir()/encodings/KEY/` and
reused by `index` and `evaluate`. `cache_dir()` is `$CONTRIEVER_CACHE`, else
`$XDG_CACHE_HOME/contriever`, else `~/.cache/contriever`; `CONTRIEVER_CACHE=off` disables it.
`evaluate` keeps query vectors there too (`queries/KEY.npy`, `CachedQueryEncoder`): the same model,
settings and query texts are encoded once, whatever index or ANN setting they are searched with.
Deleting the folder is always safe (`contriever cache --clear`). Every cache entry is checked
against its checksums before it is reused (hashing a shard takes milliseconds, encoding it minutes):
a damaged shard is reported on stderr, encoded again and replaced; a damaged query set likewise.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from contriever.data.passages import (
    WHOLE_DOCUMENTS,
    PassageSettings,
    ReadStats,
    fingerprint_files,
    iter_passages,
)
from contriever.errors import ConfigError, DataError
from contriever.io import (  # noqa: F401 (CACHE_ENV, cache_dir: re-exported, their old home)
    CACHE_ENV,
    atomic_write,
    cache_dir,
    checksum_bytes,
    folder_lock,
    write_json,
)
from contriever.machine import map_large_blocks, release_freed_memory
from contriever.retrieval.settings import EncodingSettings
from contriever.retrieval.shards import (
    MANIFEST,
    PLAN,
    STORE,
    file_entry,
    ids_name,
    read_shard_record,
    record_name,
    recorded_file_problems,
    shard_problems,
    to_fp16,
    vectors_name,
    write_manifest,
    write_shard,
)
from contriever.retrieval.store import PassageStore, write_store

DEFAULT_SHARD_ROWS = 10_000
TEXTS_PER_BLOCK = 1024  # texts handed to the encoder at a time when batches are cut by token budget
LOG = "encoding-log.jsonl"
# settings that must match for vectors to be reused or mixed; the rest of the plan is information
SETTING_KEYS = (
    "model_fingerprint",
    "pooling",
    "normalize",
    "max_length",
    "lowercase",
    "normalize_text",
    "prompts",  # the model's query/passage prompts (E5's `query: `); absent when it has none
    "precision",
    "passages",
    "input_fingerprint",
    "skip_bad",
    "shard_rows",
    "dtype",
    "dim",
)


@dataclass(frozen=True)
class FolderSettings:
    """How an index folder is written, recorded with the settings that make its vectors: passages per
    shard, the vectors' dtype, and whether bad corpus lines are skipped (and counted) instead of
    stopping the run."""

    shard_rows: int = DEFAULT_SHARD_ROWS
    dtype: str = "float16"
    skip_bad: bool = False


# ----- parts ------------------------------------------------------------------------------------------
def parse_part(text: str) -> tuple[int, int]:
    """`"I/N"` -> `(I, N)` with `0 <= I < N`."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text}: need 0 <= I < N")
    return index, count


def resolve_part(shard: str | None = None, environ=os.environ) -> tuple[int, int]:
    """This process's part `(I, N)` from `--shard I/N` and torchrun's `RANK`/`WORLD_SIZE`."""
    index, count = parse_part(shard) if shard else (0, 1)
    world = int(environ.get("WORLD_SIZE", "1") or 1)
    rank = int(environ.get("RANK", "0") or 0)
    return index * world + rank, count * world


def owned_shards(num_shards: int, part: tuple[int, int]) -> list[int]:
    """The shards part `(I, N)` encodes: every `N`-th from `I`."""
    index, count = part
    return list(range(index, num_shards, count))


# ----- fingerprints and the cache ---------------------------------------------------------------------
def encoder_fingerprint(encoder) -> str:
    """A hash of what makes an encoder's vectors: its weights (names, shapes, bytes) and its
    tokenizer's vocabulary. Two folders holding the same model get the same fingerprint."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(encoder.model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch_uint8()).numpy().tobytes())
    tokenizer = encoder.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # vocabulary, normalizer, pre-tokenizer; not the per-call truncation state
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        vocabulary = json.dumps(state, sort_keys=True)
    else:
        vocabulary = json.dumps(sorted(tokenizer.get_vocab().items()))
    digest.update(vocabulary.encode())
    return digest.hexdigest()


def torch_uint8():
    import torch

    return torch.uint8


def settings_key(settings: dict) -> str:
    # a key absent from settings made before it existed (prompts) leaves the key of those unchanged
    chosen = {key: settings.get(key) for key in SETTING_KEYS if key != "prompts" or settings.get(key)}
    return hashlib.blake2b(json.dumps(chosen, sort_keys=True).encode(), digest_size=12).hexdigest()


def cache_folder(settings: dict) -> Path | None:
    root = cache_dir()
    return None if root is None else root / "encodings" / settings_key(settings)


class CachedQueryEncoder:
    """`encoder` whose `encode_queries` is served from the cache, `root/queries/KEY.npy`, KEY hashing
    the model's fingerprint, its pooling, normalization, length and text options, the precision and
    the query texts in order. Every other attribute is the encoder's own. For evaluation, where the
    weights do not change between calls (the fingerprint, `encoder_fingerprint(encoder)` unless the
    caller already has it, is taken once)."""

    def __init__(self, encoder, root: Path, *, fingerprint: str | None = None):
        self.encoder = encoder
        self.folder = Path(root) / "queries"
        self.fingerprint = fingerprint or encoder_fingerprint(encoder)
        self.hits = 0

    def __getattr__(self, name: str):
        return getattr(self.encoder, name)

    def _path(self, texts: list[str], precision: str) -> Path:
        from contriever.model.encoder import resolve_precision

        encoder = self.encoder
        digest = hashlib.blake2b(digest_size=16)
        settings = [
            self.fingerprint,
            encoder.pooling,
            bool(encoder.normalize),
            int(encoder.max_length),
            bool(encoder.lowercase),
            bool(encoder.normalize_text),
            resolve_precision(precision, encoder.device),
        ]
        if prompt_settings(encoder):
            settings.append(prompt_settings(encoder))
        digest.update(json.dumps(settings).encode())
        for text in texts:
            digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
        return self.folder / f"{digest.hexdigest()}.npy"

    def encode_queries(
        self, queries, batch_size: int | None = None, *, precision: str = "auto", **kwargs
    ) -> np.ndarray:
        texts = list(queries)
        path = self._path(texts, precision)
        vectors = _read_cached_queries(path)
        if vectors is not None and vectors.shape == (len(texts), self.encoder.dim):
            self.hits += 1
            return vectors
        vectors = self.encoder.encode_queries(texts, batch_size, precision=precision, **kwargs)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as handle:
            np.save(handle, np.ascontiguousarray(vectors), allow_pickle=False)
        write_json(path.with_suffix(".json"), {"bytes": path.stat().st_size, "checksum": handle.checksum()})
        return vectors


def _read_cached_queries(path: Path) -> np.ndarray | None:
    """Cached query vectors, when present and equal to what was written (their checksum, in the
    `.json` beside them, matches); else None: they are encoded again and replaced."""
    import io

    try:
        data = path.read_bytes()
        record = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or checksum_bytes(data) != record.get("checksum"):
        if path.with_suffix(".json").exists():
            print(f"warning: {path}: damaged cache entry (checksum differs); encoding again", file=sys.stderr)
        return None
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError):
        return None


# ----- settings ---------------------------------------------------------------------------------------
def prompt_settings(encoder) -> dict[str, str] | None:
    """The prompts an encoder puts before queries and passages, as recorded in an index folder's
    settings (and hashed into the cache key); None when it has none."""
    prompts = (
        {name: encoder.prompt(name) for name in ("query", "passage")} if hasattr(encoder, "prompt") else {}
    )
    return prompts if any(prompts.values()) else None


def encoding_settings(
    encoder,
    inputs: Sequence[str | os.PathLike],
    *,
    model: str | None,
    passages: PassageSettings,
    precision: str = "auto",
    skip_bad: bool = False,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    dtype: str = "float16",
) -> dict:
    """Everything that determines the vectors (compared on resume, hashed for the cache)."""
    from contriever.model.encoder import resolve_precision

    precision = resolve_precision(precision, encoder.device)
    if shard_rows < 1:
        raise ConfigError(f"--shard-size must be at least 1, got {shard_rows}")
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"dtype must be float16 or float32, got {dtype!r}")
    files = fingerprint_files(inputs)
    model_name = "default" if model is None else str(model)
    return {
        "model": str(Path(model_name).resolve()) if Path(model_name).exists() else model_name,
        "model_fingerprint": encoder_fingerprint(encoder),
        "pooling": encoder.pooling,
        "normalize": bool(encoder.normalize),
        "max_length": int(encoder.max_length),
        # the paper code's text options: queries must get them too (`encoder_for_index` reads them)
        "lowercase": bool(encoder.lowercase),
        "normalize_text": bool(encoder.normalize_text),
        **({"prompts": prompt_settings(encoder)} if prompt_settings(encoder) else {}),
        "precision": precision,
        "passages": passages.as_dict(),
        "input_fingerprint": files["fingerprint"],
        "input_files": files["files"],
        "corpus": files["files"][0]["path"] if len(files["files"]) == 1 else None,  # evaluate-qa reads it
        "skip_bad": bool(skip_bad),
        "shard_rows": int(shard_rows),
        "dtype": dtype,
        "dim": int(encoder.dim),
    }


def _differences(old: dict, new: dict) -> list[str]:
    return [
        f"{key}: {old.get(key)!r} in the folder, {new.get(key)!r} now"
        for key in SETTING_KEYS
        if old.get(key) != new.get(key)
    ]


def _check_same(folder: Path, recorded: dict, settings: dict, what: str) -> None:
    differences = _differences(recorded, settings)
    if differences:
        raise ConfigError(
            f"{folder} holds {what} made with other settings or another corpus; refusing to mix them. "
            "Differences: " + "; ".join(differences) + ". Use another --output, or delete the folder."
        )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise DataError(path, f"not valid JSON ({error}); delete the folder to start again") from None


# ----- the steps --------------------------------------------------------------------------------------
def _check_folder(folder: Path, settings: dict) -> dict | None:
    """The finished manifest if the folder already holds this index; errors for any other content."""
    manifest = _read_json(folder / MANIFEST)
    if manifest is not None:
        _check_same(folder, manifest.get("metadata") or {}, settings, "an index")
        return manifest
    plan = _read_json(folder / PLAN)
    if plan is not None:
        _check_same(folder, plan["settings"], settings, "a partly encoded index")
    elif folder.exists() and any(not p.name.startswith(".") for p in folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not an index folder; refusing to write into it")
    return None


def _prepare_store(
    folder: Path, inputs: Sequence[Path], settings: dict, skip_bad: bool, show_progress: bool
) -> dict:
    """Write the passage store and the plan once (other processes wait), then return the plan."""
    with folder_lock(folder, "index", name=".store.lock", wait=True):
        plan = _read_json(folder / PLAN)
        if plan is not None:
            _check_same(folder, plan["settings"], settings, "a partly encoded index")
            if (folder / STORE).is_file():
                return plan
        for stale in folder.glob(f".{STORE}.*.tmp"):
            stale.unlink(missing_ok=True)
        stats = ReadStats()
        passages = iter_passages(
            inputs, PassageSettings(**settings["passages"]), skip_bad=skip_bad, stats=stats
        )
        bar = tqdm(passages, desc="splitting into passages", unit="psg", disable=not show_progress)
        rows = write_store(folder / STORE, bar)
        bar.close()
        if rows == 0:
            (folder / STORE).unlink()
            raise DataError(inputs[0], f"no passages: every document was empty or bad ({stats.as_dict()})")
        if plan is not None and plan["rows"] != rows:
            raise DataError(folder / PLAN, f"plans {plan['rows']} passages but the store now has {rows}")
        plan = {
            "settings": settings,
            "rows": rows,
            "shards": -(-rows // settings["shard_rows"]),
            "read": stats.as_dict(),
            "store": file_entry(folder / STORE),
        }
        write_json(folder / PLAN, plan)
        return plan


def _remove_partial(folder: Path, number: int) -> None:
    """Temporary files a killed process left for this shard (ours alone: the part lock says so)."""
    prefixes = tuple(f".{name}." for name in (vectors_name(number), ids_name(number), record_name(number)))
    # names compared, not `glob`: a pattern per shard filled Python's pattern caches (~6 KB a shard)
    for stale in folder.iterdir():
        if stale.name.startswith(prefixes) and stale.name.endswith(".tmp"):
            stale.unlink(missing_ok=True)


def _link_shard(source: Path, target: Path, number: int, *, copy: bool, verify: bool = False) -> dict | None:
    """Hard-link (or copy) a complete shard from `source` into `target`; its record comes last.
    With `verify` (reusing the cache), a shard whose contents differ from its checksums is reported,
    its record removed from `source`, and not used."""
    record = read_shard_record(source, number)
    if record is None:
        return None
    if verify and _drop_if_damaged(source, record, number):
        return None
    try:
        for name in (record["ids"], record["vectors"], record_name(number)):
            destination = target / name
            if destination.exists():
                destination.unlink()
            try:
                os.link(source / name, destination)
            except OSError:
                if not copy:
                    return None
                tmp = target / f".{name}.{os.getpid()}.tmp"
                shutil.copyfile(source / name, tmp)
                os.replace(tmp, destination)
    except OSError:
        return None
    return read_shard_record(target, number)


def _drop_if_damaged(folder: Path, record: dict, number: int) -> bool:
    """Whether shard `number` of `folder` differs from its checksums; if so it is reported on stderr
    and its record (and `index.json`, which lists it) removed, so it is encoded again."""
    problem = next(shard_problems(folder, record, where=record_name(number)), None)
    if problem is None:
        return False
    print(f"warning: {problem}; encoding that shard again", file=sys.stderr)
    (folder / record_name(number)).unlink(missing_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    return True


def repair_cached(folder: Path) -> int:
    """Check every shard of the cached index `folder` against its checksums; damaged ones lose their
    record (and the folder its `index.json`) so the next `build_index` encodes them again. Returns
    how many were damaged. Cheap against what it guards: hashing runs at gigabytes a second."""
    manifest = _read_json(folder / MANIFEST)
    if manifest is None:
        return 0
    problem = next(recorded_file_problems(folder, manifest, checksums=True), None)
    if problem is not None:  # the passage store: the whole entry is made again
        print(f"warning: {problem}; making this cache entry again", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
        return 1
    damaged = 0
    for number in range(len(manifest.get("shards") or [])):
        record = read_shard_record(folder, number)
        if record is None:
            (folder / MANIFEST).unlink(missing_ok=True)
            damaged += 1
        elif _drop_if_damaged(folder, record, number):
            damaged += 1
    return damaged


def _encode_shards(
    folder: Path,
    encoder,
    plan: dict,
    part: tuple[int, int],
    *,
    batch_size: int | None,
    cache: Path | None,
    show_progress: bool,
) -> dict:
    from contriever.data.documents import document_text

    settings = plan["settings"]
    shard_rows, rows = settings["shard_rows"], plan["rows"]
    mine = owned_shards(plan["shards"], part)
    todo = [s for s in mine if read_shard_record(folder, s) is None]
    counts = {"shards": len(mine), "already_done": len(mine) - len(todo), "from_cache": 0, "encoded": 0}
    if cache is not None and todo:
        cache.mkdir(parents=True, exist_ok=True)
        if not (cache / PLAN).exists():
            write_json(cache / PLAN, {**plan, "read": plan.get("read")})
    store = PassageStore(folder / STORE)
    total = sum(min(shard_rows, rows - s * shard_rows) for s in todo)
    # Batches by token budget: measured once per device kind, on a corpus worth it.
    if not batch_size and todo:
        from contriever.model.batching import ensure_token_budget

        counts["token_budget"] = ensure_token_budget(encoder, total)
    batching = {"batch_size": batch_size} if batch_size else {"token_budget": counts.get("token_budget")}
    map_large_blocks()  # resident memory flat over any number of shards (machine.map_large_blocks)
    progress = tqdm(
        total=total, desc=f"encoding part {part[0]}/{part[1]}", unit="psg", disable=not show_progress
    )
    try:
        for number in todo:
            _remove_partial(folder, number)
            if cache is not None and _link_shard(cache, folder, number, copy=True, verify=True) is not None:
                counts["from_cache"] += 1
                progress.update(read_shard_record(folder, number)["rows"])
                continue
            started = time.perf_counter()
            batch = store.range(number * shard_rows, (number + 1) * shard_rows)
            texts = [document_text({"title": title, "text": text}) for _, title, text in batch]
            vectors = _encode_passages(encoder, texts, batch_size, settings["precision"], progress)
            vectors = to_fp16(vectors) if settings["dtype"] == "float16" else vectors.astype(np.float32)
            write_shard(folder, number, [pid for pid, _, _ in batch], vectors)
            seconds = time.perf_counter() - started
            counts["encoded"] += 1
            _log(
                folder,
                {
                    "shard": number,
                    "rows": len(batch),
                    "seconds": round(seconds, 3),
                    "part": list(part),
                    **batching,
                    **memory_mib(),
                },
            )
            if cache is not None:
                _link_shard(folder, cache, number, copy=False)
            del batch, texts, vectors
            release_freed_memory()
    finally:
        progress.close()
        store.close()
    return counts


def _encode_passages(
    encoder, texts: list[str], batch_size: int | None, precision: str, progress
) -> np.ndarray:
    """A shard's vectors, encoded a block of texts at a time (each block sorted by length); the bar
    moves every forward pass, not every block."""
    step = 8 * batch_size if batch_size else TEXTS_PER_BLOCK
    blocks = [
        encoder.encode(
            texts[start : start + step],
            batch_size,
            precision=precision,
            show_progress=False,
            prompt_name="passage",
            on_batch=progress.update,
        )
        for start in range(0, len(texts), step)
    ]
    return np.concatenate(blocks)


def memory_mib() -> dict:
    """This process's resident memory now and at its peak so far (MiB): logged with every shard, so
    a long run shows whether memory stays flat as the corpus goes by."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    try:
        now = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):  # not Linux
        return {"peak_rss_mib": round(peak, 1)}
    return {"rss_mib": round(now, 1), "peak_rss_mib": round(peak, 1)}


def _log(folder: Path, entry: dict) -> None:
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "pid": os.getpid(), **entry}
    with open(folder / LOG, "a") as handle:  # one short line per write: appends do not interleave
        handle.write(json.dumps(entry) + "\n")


def _finish(folder: Path, plan: dict) -> tuple[dict | None, list[int]]:
    """Write `index.json` if every shard is complete; return (manifest or None, missing shards)."""
    with folder_lock(folder, "index", name=".finish.lock", wait=True):
        manifest = _read_json(folder / MANIFEST)
        if manifest is not None:
            return manifest, []
        records, missing = [], []
        for number in range(plan["shards"]):
            record = read_shard_record(folder, number)
            (missing.append(number) if record is None else records.append(record))
        if missing:
            return None, missing
        settings = plan["settings"]
        manifest = write_manifest(
            folder,
            records,
            dim=settings["dim"],
            dtype=settings["dtype"],
            metadata=settings,
            extra={"read": plan.get("read"), "store": STORE},
            files={STORE: plan.get("store") or file_entry(folder / STORE)},
        )
        return manifest, []


def build_index(
    inputs: Sequence[str | os.PathLike],
    encoder,
    output: str | os.PathLike,
    encoding: EncodingSettings | None = None,
    *,
    model: str | None = None,
    layout: FolderSettings | None = None,
    part: tuple[int, int] = (0, 1),
    show_progress: bool = True,
) -> dict:
    """Encode `inputs` into the index folder `output` (see the module docstring), as part `part`.

    From `encoding`: the passages (`words`, `overlap`), `batch_size`, `precision` and `use_cache`
    (the encoder's own text options and length apply); `layout`: shard size, dtype, `skip_bad`.
    Returns a summary: `complete` (whether `index.json` now exists), `missing_shards` (other parts'
    shards still to do), the shard counts of this process (`encoded`, `from_cache`, `already_done`),
    the passage count and what reading skipped.
    """
    encoding, layout = encoding or EncodingSettings(), layout or FolderSettings()
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ConfigError("no input files to index")
    folder = Path(output)
    settings = encoding_settings(
        encoder,
        inputs,
        model=model,
        passages=encoding.passages,
        precision=encoding.precision,
        skip_bad=layout.skip_bad,
        shard_rows=layout.shard_rows,
        dtype=layout.dtype,
    )
    summary = {"folder": str(folder), "part": list(part)}
    if _check_folder(folder, settings) is not None:
        manifest = _read_json(folder / MANIFEST)
        return {
            **summary,
            "complete": True,
            "missing_shards": [],
            "passages": manifest["count"],
            "encoded": 0,
        }
    folder.mkdir(parents=True, exist_ok=True)
    cache = cache_folder(settings) if encoding.use_cache else None
    if cache is not None and cache.resolve() == folder.resolve():
        cache = None
    with ExitStack() as locks:
        if part[1] == 1:
            locks.enter_context(folder_lock(folder, "index"))
        else:
            locks.enter_context(folder_lock(folder, "index", shared=True))
            locks.enter_context(folder_lock(folder, "index", name=f".lock-part-{part[0]}-of-{part[1]}"))
        plan = _prepare_store(folder, inputs, settings, layout.skip_bad, show_progress)
        counts = _encode_shards(
            folder,
            encoder,
            plan,
            part,
            batch_size=encoding.batch_size,
            cache=cache,
            show_progress=show_progress,
        )
        manifest, missing = _finish(folder, plan)
    return {
        **summary,
        **counts,
        "complete": manifest is not None,
        "missing_shards": missing,
        "passages": plan["rows"],
        "read": plan.get("read"),
    }


def cached_index(
    inputs: Sequence[str | os.PathLike],
    encoder,
    *,
    model: str | None = None,
    passages: PassageSettings = WHOLE_DOCUMENTS,
    batch_size: int | None = None,
    precision: str = "auto",
    show_progress: bool = True,
    use_cache: bool = True,
) -> tuple[Path, dict, tempfile.TemporaryDirectory | None]:
    """Encode `inputs` into the cache (or a temporary folder when the cache is off) and return
    `(folder, summary, temporary)`: what `evaluate` searches. Keep `temporary` alive while searching."""
    settings = encoding_settings(encoder, inputs, model=model, passages=passages, precision=precision)
    folder = cache_folder(settings) if use_cache else None
    temporary = None
    if folder is None:
        temporary = tempfile.TemporaryDirectory(prefix="contriever-encode-")
        folder = Path(temporary.name) / "index"
    else:
        repair_cached(folder)  # a damaged cached shard is encoded again, never searched
    encoding = EncodingSettings(
        words=passages.words,
        overlap=passages.overlap,
        batch_size=batch_size,
        precision=precision,
        use_cache=False,  # the folder is the cache entry
    )
    summary = build_index(inputs, encoder, folder, encoding, model=model, show_progress=show_progress)
    return folder, summary, temporary
