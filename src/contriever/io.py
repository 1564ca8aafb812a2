"""File helpers that never leave a torn file behind, and say so in one line when the disk is full.

- `atomic_write(path)`: write to a temporary file beside `path`; every write is checked (a full disk
  or a file-size limit raises `DiskFullError` naming the file and the bytes needed), then flush, fsync,
  a size check, and one rename into place. On failure the temporary file is removed and the previous
  `path` is untouched.
- `atomic_folder(path)`: the same for a whole folder (a staging folder renamed into place), and
  `atomic_files(folder)` for a few files of a folder replaced together.
- `write_manifest(folder)` / `verify_manifest(folder)`: `manifest.json`, written last, lists each
  file's size and content checksum; a folder is complete only when its manifest says so. Loaders
  check the sizes always and the checksums where that is cheap (`CHEAP_BYTES`); `contriever verify`
  checks everything.
- Checksums (`checksum_bytes`, `file_checksum`): xxHash's XXH3-128 (the `xxhash` package), written
  `"xxh3_128:<32 hex digits>"`. `atomic_write` hashes the bytes as they are written (no second read)
  and remembers the result, so a manifest made right after does not read the files again.
- `folder_lock(folder, command)`: one writer per output folder (or per lock `name` in it) (`fcntl.flock`, dropped by the OS when
  the process exits or crashes), refusing a second one with the holder's pid and host.

Commands that write should call `ignore_file_size_signal()` first: a file-size limit (`ulimit -f`)
otherwise kills the process with SIGXFSZ instead of letting the write fail with an error.
"""

from __future__ import annotations

import codecs
import errno
import gzip
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from contriever.errors import DataError

MANIFEST_NAME = "manifest.json"
CHECKSUM_ALGORITHM = "xxh3_128"
# A folder whose files total at most this many bytes has its checksums verified every time it is
# loaded: about 0.1 s at the read-and-hash rate measured on CPU B (benchmarks/checksum_speed.py), less
# than loading what such a folder holds (a model, an evaluation run) takes. Bigger folders get sizes
# checked on load and contents by `contriever verify`.
CHEAP_BYTES = 256 << 20
LOCK_NAME = ".contriever.lock"
CACHE_ENV = "CONTRIEVER_CACHE"  # where reusable encodings and converted models live; "off" for none
# Out of space, out of quota, or over the file-size limit: each means "the disk is full" to a user.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class DiskFullError(OSError):
    """No room to write `path` (disk, quota or file-size limit). The previous version is untouched.

    `written` bytes reached the disk before the failure; `needed` is the file's full size when the
    writer knew it, else a lower bound (what had been asked for when the write failed), or None.
    """

    def __init__(self, path: str | os.PathLike, written: int, needed: int | None, reason: str = ""):
        self.path, self.written, self.needed, self.reason = str(path), written, needed, reason
        amount = f"needed {_size(needed)}, wrote {_size(written)}" if needed else f"wrote {_size(written)}"
        super().__init__(
            f"{self.path}: disk full ({reason or 'no space left'}): {amount}; nothing was replaced. "
            "Free space (or raise the file-size limit) and run again."
        )
        self.errno = errno.ENOSPC

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return type(self), (self.path, self.written, self.needed, self.reason)


class FolderLockedError(BlockingIOError):
    """Another process is writing into this folder (see `folder_lock`)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.EWOULDBLOCK

    def __str__(self) -> str:
        return self.args[0]


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
    raise AssertionError("unreachable")


# How libraries that do their own I/O in Rust or C (safetensors, tokenizers, numpy's `tofile` short
# write, which carries no errno) word the same errors.
_ERRNO_TEXT = "|".join(str(n) for n in sorted(DISK_FULL_ERRNOS))
_DISK_FULL_TEXT = re.compile(
    r"No space left on device|File too large|Disk quota exceeded|\d+ requested and \d+ written"
    rf"|os error (?:{_ERRNO_TEXT})\b"
)


# SQLite reports a full disk as SQLITE_FULL, and a write past a file-size limit as a failed write.
_SQLITE_FULL = frozenset({"SQLITE_FULL", "SQLITE_IOERR_WRITE"})


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` means the disk (quota, file-size limit) is full, however a library wrapped it."""
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno in DISK_FULL_ERRNOS
    if getattr(error, "sqlite_errorname", None) in _SQLITE_FULL:
        return True
    return bool(_DISK_FULL_TEXT.search(str(error)))


def as_disk_full(error: BaseException, path: str | os.PathLike, written: int = 0) -> DiskFullError | None:
    """`error` as a DiskFullError naming `path` when it means the disk is full, else None.

    For writers this module does not wrap (SQLite, a library writing by path): `raise as_disk_full(
    error, target) or error`-style handling keeps their other errors as they are.
    """
    if isinstance(error, DiskFullError) or not is_disk_full(error):
        return None
    return DiskFullError(path, written, None, _reason(error))


def _reason(error: BaseException) -> str:
    if getattr(error, "sqlite_errorname", None) in _SQLITE_FULL:
        return f"SQLite: {error}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    match = _DISK_FULL_TEXT.search(str(error))
    return match.group(0) if match else ""


def ignore_file_size_signal() -> None:
    """Make an exceeded file-size limit fail the write (EFBIG) instead of killing the process."""
    if hasattr(signal, "SIGXFSZ"):
        with suppress(ValueError):  # not the main thread: leave the disposition alone
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


# ----- checked single-file writes ------------------------------------------------------------------------
class CheckedFile:
    """A file handle whose writes are counted and whose disk-full failures become `DiskFullError`.

    Everything but `write` passes through to the real handle. Libraries that swallow a write error
    into their own (torch.save's "enforce fail", FAISS's "fwrite") are caught too: the first failure
    is kept in `failure` and `atomic_write` raises it instead of the library's message.
    """

    def __init__(self, handle: IO, target: Path, size_hint: int | None = None):
        self._handle = handle
        self.target = target
        self.size_hint = size_hint
        self.requested = 0  # bytes (characters in text mode) handed to write()
        self.failure: DiskFullError | None = None
        self._hasher = new_hasher()  # over the bytes as written: the checksum costs no second read

    def write(self, data) -> int:
        try:
            written = self._handle.write(data)
        except OSError as error:
            raise self.fail(error, len(data)) from None
        self.requested += len(data)
        self._hasher.update(data.encode("utf-8") if isinstance(data, str) else data)
        return written

    def checksum(self) -> str:
        """The checksum of every byte written so far (`"xxh3_128:..."`)."""
        return f"{CHECKSUM_ALGORITHM}:{self._hasher.hexdigest()}"

    def fail(self, error: OSError, pending: int = 0) -> OSError:
        """The error to raise for `error`: a DiskFullError when it means no space, else `error`."""
        if not is_disk_full(error):
            return error
        if self.failure is None:
            try:
                on_disk = os.fstat(self._handle.fileno()).st_size
            except (OSError, ValueError):
                on_disk = self.requested
            needed = max(self.size_hint or 0, self.requested + pending)
            self.failure = DiskFullError(self.target, on_disk, needed, _reason(error))
        return self.failure

    def finish(self) -> None:
        """flush, fsync, and check that the file on disk has every byte written."""
        try:
            self._handle.flush()
            position = self._handle.tell()
            os.fsync(self._handle.fileno())
            on_disk = os.fstat(self._handle.fileno()).st_size
        except OSError as error:
            raise self.fail(error) from None
        expected = self.requested if "b" in getattr(self._handle, "mode", "b") else position
        if on_disk != expected:
            raise OSError(errno.EIO, f"{self.target}: {on_disk} bytes on disk after writing {expected}")

    def __getattr__(self, name):
        return getattr(self._handle, name)


@contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", *, size_hint: int | None = None
) -> Iterator[CheckedFile]:
    """Open a temporary file beside `path`; on success it replaces `path` in one rename.

    Text mode is UTF-8. `size_hint` (the expected size in bytes, when known) goes into the disk-full
    message. On any failure the temporary file is removed and `path` keeps its previous content.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    checked = None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            checked = CheckedFile(handle, target, size_hint)
            yield checked
            checked.finish()
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it an ordinary file's mode
        os.replace(tmp, target)
        _fsync_folder(target.parent)
        remember_checksum(target, checked.checksum())
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if checked is not None and checked.failure is not None:
            raise checked.failure from None  # a library's wrapped message would hide the cause
        if is_disk_full(error) and not isinstance(error, DiskFullError):
            written = checked.requested if checked is not None else 0
            raise DiskFullError(target, written, max(written, size_hint or 0), _reason(error)) from None
        raise


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable (a crash right after it would otherwise undo it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=False)
        handle.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    with atomic_write(path, "wb", size_hint=len(data)) as handle:
        handle.write(data)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a log (e.g. metrics.jsonl), flushed and fsynced; disk full -> DiskFullError.

    A failed append is cut back off, so the log never ends in half a line.
    """
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    with open(path, "ab") as handle:
        start = handle.tell()
        try:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as error:
            with suppress(OSError):
                handle.truncate(start)
            if is_disk_full(error):
                raise DiskFullError(path, 0, len(data), _reason(error)) from None
            raise


# ----- checksums ----------------------------------------------------------------------------------------
def new_hasher():
    """A fresh XXH3-128 hasher (`update(bytes)`, `hexdigest()`)."""
    try:
        import xxhash
    except ImportError:  # a hard dependency; say so in one line if an install lost it
        raise ImportError("contriever needs the `xxhash` package for checksums: pip install xxhash") from None
    return xxhash.xxh3_128()


def checksum_bytes(data: bytes | memoryview) -> str:
    """The checksum of `data`, as `"xxh3_128:<hex>"`."""
    hasher = new_hasher()
    hasher.update(data)
    return f"{CHECKSUM_ALGORITHM}:{hasher.hexdigest()}"


def file_checksum(path: str | os.PathLike, progress=None, chunk: int = 8 << 20) -> str:
    """The checksum of the file at `path`, read in `chunk`-byte blocks (`progress.update(n)` after
    each, when given)."""
    hasher = new_hasher()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            hasher.update(block)
            if progress is not None:
                progress.update(len(block))
    return f"{CHECKSUM_ALGORITHM}:{hasher.hexdigest()}"


def is_checksum(value) -> bool:
    """Whether `value` is a checksum this version can check (`"xxh3_128:<32 hex>"`)."""
    return isinstance(value, str) and re.fullmatch(rf"{CHECKSUM_ALGORITHM}:[0-9a-f]{{32}}", value) is not None


# What `atomic_write` hashed, by path: (size, mtime_ns, inode, checksum). A manifest written soon
# after takes the checksum from here when the file is unchanged, instead of reading it again.
_WRITTEN: dict[str, tuple[int, int, int, str]] = {}
_WRITTEN_LIMIT = 100_000


def remember_checksum(path: Path, checksum: str) -> None:
    try:
        stat = os.stat(path)
    except OSError:
        return
    if len(_WRITTEN) >= _WRITTEN_LIMIT:
        _WRITTEN.clear()
    _WRITTEN[os.path.abspath(path)] = (stat.st_size, stat.st_mtime_ns, stat.st_ino, checksum)


def written_checksum(path: str | os.PathLike) -> str:
    """The checksum of the file at `path`: the one `atomic_write` computed while writing it when the
    file is unchanged since, else read and hashed now (files a library wrote by path)."""
    key = os.path.abspath(path)
    stat = os.stat(path)
    known = _WRITTEN.pop(key, None)
    if known is not None and known[:3] == (stat.st_size, stat.st_mtime_ns, stat.st_ino):
        return known[3]
    return file_checksum(path)


def _forget_checksums(folder: Path) -> None:
    """Staging paths are gone after a rename: drop what was remembered under them."""
    prefix = os.path.abspath(folder) + os.sep
    for key in [k for k in _WRITTEN if k.startswith(prefix)]:
        del _WRITTEN[key]


# ----- folders ------------------------------------------------------------------------------------------
@contextmanager
def atomic_folder(
    path: str | os.PathLike, *, manifest: bool = True, size_hint: int | None = None
) -> Iterator[Path]:
    """Yield an empty staging folder beside `path`; on success it replaces `path` (kept on failure).

    With `manifest` (the default) `manifest.json` listing every file's size is written last, so
    `verify_manifest` can tell a complete folder from a damaged one. The old folder is renamed aside,
    the new one renamed in, then the old one deleted: a crash leaves either the old folder or the new
    one under `path`, never a half-written one. A disk-full failure of a library writing into the
    staging folder by path (e.g. `save_pretrained`) is raised as `DiskFullError` naming `path`, with
    `size_hint` (the folder's expected size, when known) as what was needed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield staging
        if manifest:
            write_manifest(staging)
        swap_into_place(staging, target)
        _forget_checksums(staging)
    except BaseException as error:
        _discard_staging(error, staging, target, size_hint)
        raise


def _discard_staging(error: BaseException, staging: Path, target: Path, size_hint: int | None) -> None:
    """Remove a failed staging folder; re-raise a disk-full failure naming `target`, not `staging`."""
    written = _folder_bytes(staging)
    shutil.rmtree(staging, ignore_errors=True)
    if is_disk_full(error) and not isinstance(error, DiskFullError):
        raise DiskFullError(target, written, size_hint, _reason(error)) from None
    if isinstance(error, DiskFullError) and Path(error.path).is_relative_to(staging):
        # Name the file where it would have been, not its staging name.
        where = target / Path(error.path).relative_to(staging)
        raise DiskFullError(where, error.written, error.needed, error.reason) from None


@contextmanager
def atomic_files(folder: str | os.PathLike, *, size_hint: int | None = None) -> Iterator[Path]:
    """Replace a few files of `folder` together: all of them or none (e.g. run.trec + metrics.json).

    Yields a staging folder inside `folder`; write the files there. On success a `manifest.json`
    listing them is made, the files are renamed over their old versions, the manifest last. On
    failure (a full disk while writing) no file of `folder` has changed.
    """
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging.", suffix=".tmp", dir=target))
    try:
        yield staging
        names = folder_files(staging)
        write_manifest(staging, names)
        for name in [*names, MANIFEST_NAME]:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, target / name)
        shutil.rmtree(staging, ignore_errors=True)
        _forget_checksums(staging)
        _fsync_folder(target)
    except BaseException as error:
        _discard_staging(error, staging, target, size_hint)
        raise


def _folder_bytes(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    except OSError:
        return 0


def swap_into_place(staging: Path, target: Path) -> None:
    """Replace the folder `target` by `staging` (two renames; the old one removed afterwards)."""
    if target.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        backup.rmdir()
        target.rename(backup)
        staging.rename(target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        staging.rename(target)
    _fsync_folder(target.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def folder_files(folder: str | os.PathLike) -> list[str]:
    """Every file under `folder` (relative POSIX paths, sorted), without the manifest, lock and temp files."""
    folder = Path(folder)
    names = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if not path.is_file() or relative.as_posix() in (MANIFEST_NAME, LOCK_NAME):
            continue
        if any(part.startswith(".") and part.endswith(".tmp") for part in relative.parts):
            continue  # a writer's temporary file, not part of the folder
        names.append(relative.as_posix())
    return sorted(names)


def write_manifest(folder: str | os.PathLike, files: Iterable[str] | None = None, **extra) -> dict:
    """Write `folder/manifest.json` listing the size and checksum of `files` (default: every file).

    Call it after everything else is written and fsynced: its presence is what says "complete".
    Checksums come from `atomic_write` where it wrote the file (no second read), else the file is
    hashed once here. `extra` keys are stored beside the file list (e.g. what wrote the folder).
    """
    folder = Path(folder)
    names = folder_files(folder) if files is None else sorted(files)
    manifest = {
        "complete": True,
        "files": {name: (folder / name).stat().st_size for name in names},
        "checksums": {name: written_checksum(folder / name) for name in names},
        **extra,
    }
    write_json(folder / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(folder: str | os.PathLike, *, required: bool = True) -> dict | None:
    """`folder/manifest.json` as a dict with a `files` size table (None when absent and not
    `required`); DataError when it is absent, not JSON, or not a manifest."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        if not required:
            return None
        raise DataError(
            folder,
            f"incomplete: no {MANIFEST_NAME} (it is written last, so the write that made this folder "
            "did not finish); make the folder again",
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["files"] = dict(manifest["files"])
        manifest["checksums"] = dict(manifest.get("checksums") or {})
    except json.JSONDecodeError as error:
        raise DataError(path, f"not valid JSON ({error.msg})", error.lineno) from None
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, AttributeError):
        raise DataError(path, "not a manifest (expected an object with a 'files' size table)") from None
    return manifest


def manifest_problems(
    folder: str | os.PathLike, manifest: dict, *, checksums: bool, progress=None
) -> Iterator[DataError]:
    """Each file of `manifest` that is missing, has another size, or (with `checksums`) other
    contents than when it was written, as a DataError naming the file. Files written before
    checksums existed are checked by size only."""
    folder = Path(folder)
    recorded = manifest.get("checksums") or {}
    for name, size in manifest["files"].items():
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            yield DataError(folder / MANIFEST_NAME, f"lists {name!r}, which is outside the folder")
            continue
        file = folder / relative
        if not file.is_file():
            yield DataError(file, f"missing (listed in {MANIFEST_NAME}); the folder is incomplete")
            continue
        actual = file.stat().st_size
        if actual != size:
            yield DataError(
                file,
                f"{actual:,} bytes, {MANIFEST_NAME} says {size:,}: truncated or changed since it was written",
            )
            continue
        expected = recorded.get(name)
        if checksums and expected is not None:
            yield from content_problem(file, expected, MANIFEST_NAME, progress)


def content_problem(file: Path, expected, where: str, progress=None) -> Iterator[DataError]:
    """A DataError when `file`'s checksum is not `expected` (or `expected` is unreadable)."""
    if not is_checksum(expected):
        yield DataError(file, f"{where} records checksum {expected!r}, which this version cannot check")
        return
    actual = file_checksum(file, progress)
    if actual != expected:
        yield DataError(
            file,
            f"contents changed since it was written (checksum {actual.split(':')[1][:12]}..., "
            f"{where} says {expected.split(':')[1][:12]}...): damaged; restore or rebuild it",
        )


def verify_manifest(
    folder: str | os.PathLike, *, required: bool = True, checksums: bool | None = None
) -> dict | None:
    """Check every file listed in `folder/manifest.json` exists with its recorded size, and with its
    recorded checksum when `checksums` is True, or None and the files total at most `CHEAP_BYTES`.

    Returns the manifest (None when there is none and `required` is False). Raises DataError naming
    the first file that is missing, has another size or other contents, or the folder when the
    manifest is absent.
    """
    manifest = read_manifest(folder, required=required)
    if manifest is None:
        return None
    if checksums is None:
        checksums = sum(manifest["files"].values()) <= CHEAP_BYTES
    for problem in manifest_problems(folder, manifest, checksums=checksums):
        raise problem
    return manifest


# ----- one writer per folder --------------------------------------------------------------------------
_HELD: dict[tuple[Path, str, bool], list] = {}  # (folder, lock name, shared) -> [fd, depth]: locks nest


@contextmanager
def folder_lock(
    folder: str | os.PathLike,
    command: str = "",
    *,
    name: str = LOCK_NAME,
    shared: bool = False,
    wait: bool = False,
) -> Iterator[Path]:
    """Hold a lock on `folder/name` (the folder created if needed) for the duration of the block.

    The lock is `fcntl.flock`, so the OS drops it when the process ends or crashes: no stale lock to
    delete by hand. Exclusive unless `shared` (many readers, or the parts of one `contriever index`
    run); a holder of an exclusive lock records its command, pid and host in the lock file. Without
    `wait`, a lock held by another process raises `FolderLockedError` at once, naming the holder.
    Nested use of one lock in one process is fine. Used by training (the run folder) and by
    `contriever index` (the index folder, its parts, its passage store and its last step).
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = (folder.resolve(), name, shared)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield folder
        finally:
            _HELD[key][1] -= 1
        return
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask() | 0o600)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
    except OSError as error:
        holder = _read_holder(path)
        os.close(fd)
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise FolderLockedError(
            f"{folder}: in use by another process ({holder}); wait for it to finish or choose another "
            "output folder"
        ) from None
    if not shared:
        holder = {"command": command, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
    _HELD[key] = [fd, 1]
    try:
        yield folder
    finally:
        del _HELD[key]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        command = f"`contriever {info['command']}`, " if info["command"] else ""
        return f"{command}pid {info['pid']} on host {info['host']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


# ----- reading --------------------------------------------------------------------------------------------
def open_text(path: str | os.PathLike) -> IO[str]:
    """Open a UTF-8 text file for reading, gzip-compressed when its name ends in .gz.

    A byte-order mark at the start (Windows tools write one) is dropped.
    """
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def numbered_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """`(line number from 1, line)` of a UTF-8 text file (gzip when .gz), line ends kept.

    A byte-order mark at the start is dropped. Each line is decoded on its own, so bytes that are not
    UTF-8 raise a `DataError` naming their own line and column (a text-mode reader decodes ahead in
    blocks and blames an earlier line); so does a truncated or corrupt gzip, at the line it cut.
    """
    from contriever.errors import DataError

    path = Path(path)
    try:
        handle = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, expected a file") from None
    with handle:
        number = 0
        try:
            for number, raw in enumerate(handle, start=1):
                if number == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise DataError(
                        path,
                        f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
                        "save the file as UTF-8",
                        number,
                    ) from None
                yield number, line
        except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
            hint = ": is it a truncated or corrupt gzip?" if path.suffix == ".gz" else ""
            raise DataError(path, f"cannot read the file ({error}){hint}", number + 1) from None


def cache_dir() -> Path | None:
    """Where reusable encodings (`contriever.retrieval.encode`) and converted models live:
    $CONTRIEVER_CACHE, else $XDG_CACHE_HOME/contriever, else ~/.cache/contriever; None when the
    cache is off."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in ("off", "0", "none", "false"):
        return None
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "contriever"
