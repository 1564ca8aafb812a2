"""contriever.io: checked atomic writes, disk-full errors, folder manifests, folder locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from contriever.errors import DataError
from contriever.io import (
    MANIFEST_NAME,
    DiskFullError,
    FolderLockedError,
    append_line,
    atomic_folder,
    atomic_write,
    folder_lock,
    verify_manifest,
    write_bytes,
    write_manifest,
)
from tests.limits import REPO, run_with_file_size_limit

LIMIT = 64 * 1024


def test_atomic_write_failure_keeps_previous_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("new, half written")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    with atomic_write(target, "wb") as handle:
        handle.write(b"new\n")
    assert target.read_bytes() == b"new\n"


# The child ignores SIGXFSZ as the CLI does, then writes past the limit in several ways.
DISK_FULL_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from contriever.io import DiskFullError, atomic_write, atomic_folder, append_line, ignore_file_size_signal
    ignore_file_size_signal()
    out = Path(sys.argv[1])
    kind = sys.argv[2]
    try:
        if kind == "bytes":
            with atomic_write(out / "f.bin", "wb", size_hint=200_000) as h:
                h.write(b"x" * 100_000)
                h.write(b"y" * 100_000)
        elif kind == "text":
            with atomic_write(out / "f.bin") as h:
                for _ in range(20_000):
                    h.write("0123456789\\n")
        elif kind == "numpy":
            with atomic_write(out / "f.bin", "wb") as h:
                np.save(h, np.zeros(100_000, dtype=np.float32))
        elif kind == "torch":
            import torch
            with atomic_write(out / "f.bin", "wb") as h:
                torch.save({"w": torch.zeros(100_000)}, h)
        elif kind == "folder":
            with atomic_folder(out / "folder") as staging:
                (staging / "small.txt").write_text("ok")
                np.save(staging / "big.npy", np.zeros(100_000, dtype=np.float32))
        elif kind == "append":
            append_line(out / "log.jsonl", "z" * 100_000)
    except DiskFullError as error:
        print(json.dumps({"message": str(error), "path": error.path, "needed": error.needed}))
        sys.exit(3)
    """
)


@pytest.mark.parametrize("kind", ["bytes", "text", "numpy", "torch", "folder", "append"])
def test_disk_full_raises_disk_full_error_and_keeps_previous_file(tmp_path, kind):
    (tmp_path / "f.bin").write_bytes(b"previous")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep.txt").write_text("previous folder")
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n')
    result = run_with_file_size_limit(["-c", DISK_FULL_CHILD, str(tmp_path), kind], LIMIT)
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert "disk full" in report["message"] and "\n" not in report["message"]
    # A library writing into the staging folder by path gives no file name: the folder is named.
    expected_file = {"folder": tmp_path / "folder", "append": tmp_path / "log.jsonl"}
    assert report["path"] == str(expected_file.get(kind, tmp_path / "f.bin"))
    if kind == "bytes":
        assert report["needed"] == 200_000 and "195.3 KiB" in report["message"]
    elif kind == "folder":
        assert report["needed"] is None and "wrote 64.0 KiB" in report["message"]  # size unknown
    else:
        assert report["needed"] > LIMIT
    # The previous state is untouched and no temporary file is left behind.
    assert (tmp_path / "f.bin").read_bytes() == b"previous"
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["keep.txt"]
    assert (tmp_path / "log.jsonl").read_text() == '{"step": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "folder", "log.jsonl"]


def test_disk_full_error_is_one_line_and_pickles(tmp_path):
    import pickle

    error = DiskFullError(tmp_path / "x.npy", 1024, 4096, "File too large")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.needed == 4096
    assert isinstance(error, OSError) and "\n" not in str(error)
    assert "x.npy: disk full (File too large): needed 4.0 KiB, wrote 1.0 KiB" in str(error)


def test_write_bytes_and_manifest_round_trip(tmp_path):
    write_bytes(tmp_path / "a.bin", b"12345")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("hello")
    (tmp_path / ".c.bin.abc.tmp").write_text("a writer's leftover")
    manifest = write_manifest(tmp_path, producer="test")
    assert manifest["files"] == {"a.bin": 5, "sub/b.txt": 5} and manifest["producer"] == "test"
    assert verify_manifest(tmp_path)["files"] == manifest["files"]


def test_verify_manifest_names_truncated_missing_and_outside_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"12345")
    (tmp_path / "b.bin").write_bytes(b"678")
    write_manifest(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"123")
    with pytest.raises(DataError, match=r"a\.bin: 3 bytes, manifest\.json says 5: truncated"):
        verify_manifest(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"12345")
    (tmp_path / "b.bin").unlink()
    with pytest.raises(DataError, match=r"b\.bin: missing \(listed in manifest\.json\)"):
        verify_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"files": {"../x": 1}}))
    with pytest.raises(DataError, match="outside the folder"):
        verify_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        verify_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).unlink()
    assert verify_manifest(tmp_path, required=False) is None
    with pytest.raises(DataError, match="incomplete: no manifest.json"):
        verify_manifest(tmp_path)


def test_atomic_folder_writes_manifest_last_and_failure_keeps_old_folder(tmp_path):
    target = tmp_path / "out"
    with atomic_folder(target) as staging:
        (staging / "x.txt").write_text("one")
    assert verify_manifest(target)["files"] == {"x.txt": 3}
    with pytest.raises(KeyboardInterrupt), atomic_folder(target) as staging:
        (staging / "y.txt").write_text("two")
        raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "x.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_append_line_appends_whole_lines(tmp_path):
    append_line(tmp_path / "log.jsonl", '{"a": 1}')
    append_line(tmp_path / "log.jsonl", '{"a": 2}\n')
    assert (tmp_path / "log.jsonl").read_text() == '{"a": 1}\n{"a": 2}\n'


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from contriever.io import folder_lock
    with folder_lock(sys.argv[1], "pretrain"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_folder_lock_refuses_a_second_process_and_is_released_when_the_holder_dies(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError) as caught, folder_lock(tmp_path, "pretrain"):
            pass
        message = str(caught.value)
        assert f"pid {holder.pid}" in message and "`contriever pretrain`" in message
        assert str(tmp_path) in message and "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no cleanup code runs
        holder.wait()
    deadline = time.time() + 10
    with folder_lock(tmp_path, "finetune"):  # the OS dropped the dead holder's lock
        assert time.time() < deadline


def test_folder_lock_nests_within_one_process_and_releases(tmp_path):
    with folder_lock(tmp_path, "finetune"), folder_lock(tmp_path, "pretrain"):
        pass
    with folder_lock(tmp_path, "pretrain"):
        pass


def test_atomic_write_np_save_round_trips(tmp_path):
    vectors = np.arange(12, dtype=np.float16).reshape(3, 4)
    with atomic_write(tmp_path / "v.npy", "wb", size_hint=vectors.nbytes + 128) as handle:
        np.save(handle, vectors)
    assert np.array_equal(np.load(tmp_path / "v.npy"), vectors)
