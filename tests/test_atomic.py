"""`atomic_file` and `atomic_folder`: old or whole new, no trace of a failed write, and never a user's file lost."""

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from contextlib import contextmanager

import pytest

from buildlm.atomic import (
    OUTPUTS,
    atomic_file,
    atomic_folder,
    atomic_write_text,
    remove_stale_temporaries,
)


def test_a_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "eval.json"
    atomic_write_text(path, "old\n")
    with atomic_file(path) as tmp:
        tmp.write_text("new\n", encoding="utf-8")
        assert path.read_text(encoding="utf-8") == "old\n"  # not replaced before the block ends
    assert path.read_text(encoding="utf-8") == "new\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["eval.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "metrics.csv"
    atomic_write_text(path, "step,loss\n1,2.0\n")
    with pytest.raises(RuntimeError, match="disk full"), atomic_file(path) as tmp:
        tmp.write_text("step,lo", encoding="utf-8")
        raise RuntimeError("disk full")
    assert path.read_text(encoding="utf-8") == "step,loss\n1,2.0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


@contextmanager
def _files_limited_to(limit: int):
    """Make the kernel refuse writes past ``limit`` bytes (``ulimit -f``), as a full disk would.

    ``EFBIG`` comes back from the write that crosses the limit (``SIGXFSZ``, which would kill
    the process, is ignored meanwhile); both are restored after the block.
    """
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_text_write_that_fails_midway_keeps_the_old_file(tmp_path):
    path = tmp_path / "tok.json"
    atomic_write_text(path, "old\n")
    # The disk refuses the write after 64 KiB of the 1 MB: a real half-written file.
    with _files_limited_to(64 * 1024), pytest.raises(OSError) as info:
        atomic_write_text(path, "x" * 1_000_000)
    assert info.value.errno == errno.EFBIG and info.value.filename == str(path)
    # A character UTF-8 cannot encode (a lone surrogate) fails the write too.
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "y" * 100_000 + "\ud800")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.json"]


def test_a_text_write_is_flushed_to_disk_with_its_folder(tmp_path, monkeypatch):
    # Durability cannot be observed without a power cut, so watch which files and folders are
    # synced (the real os.fsync still runs): the new file before it replaces the old one, and
    # the folder after, so that the rename itself is on disk.
    synced = []
    fsync = os.fsync

    def watched_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        fsync(fd)

    path = tmp_path / "tok.json"
    atomic_write_text(path, "old\n")
    monkeypatch.setattr(os, "fsync", watched_fsync)
    atomic_write_text(path, "new\n")
    assert synced == [path.stat().st_ino, tmp_path.stat().st_ino]


# --- writers never delete what they did not write -------------------------------------------



def _write(folder, **files):
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


def test_a_folder_of_user_files_with_a_clashing_name_is_refused_and_untouched(tmp_path):
    out = tmp_path / "p"
    (out / "src").mkdir(parents=True)
    _write(out, **{"config.json": "{}"})
    (out / "src" / "main.py").write_text("code")
    for force in (False, True):
        clash = pytest.raises(ValueError, match=r"config\.json, which buildlm did not write")
        with clash, atomic_folder(out, force=force, will_write=("config.json",)):
            raise AssertionError("refused before the block runs")  # pragma: no cover
        with clash, atomic_folder(out, force=force) as tmp:  # names found only after the block
            _write(tmp, **{"config.json": "new"})
    assert (out / "config.json").read_text() == "{}"
    assert (out / "src" / "main.py").read_text() == "code"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no temporary left


def test_buildlm_output_is_replaced_only_with_force_and_user_files_survive(tmp_path):
    out = tmp_path / "model"
    with atomic_folder(out) as tmp:
        _write(tmp, **{"config.json": "v1", "old.bin": "x"})
    assert json.loads((out / OUTPUTS).read_text())["files"] == ["config.json", "old.bin"]
    (out / "README.md").write_text("my notes")
    earlier = pytest.raises(ValueError, match=r"earlier buildlm output .*--force.*README\.md, are kept")
    with earlier, atomic_folder(out) as tmp:
        _write(tmp, **{"config.json": "v2"})
    assert (out / "config.json").read_text() == "v1"
    with atomic_folder(out, force=True) as tmp:
        _write(tmp, **{"config.json": "v2", "new.bin": "y"})
    assert sorted(p.name for p in out.iterdir()) == [OUTPUTS, "README.md", "config.json", "new.bin"]
    assert (out / "README.md").read_text() == "my notes"
    assert (out / "config.json").read_text() == "v2"
    assert json.loads((out / OUTPUTS).read_text())["files"] == ["config.json", "new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_new_files_are_written_beside_user_files_that_do_not_clash(tmp_path):
    (tmp_path / "book.txt").write_text("my text")
    with atomic_folder(tmp_path) as tmp:
        _write(tmp, **{"manifest.json": "{}"})
    assert (tmp_path / "book.txt").read_text() == "my text"
    assert (tmp_path / "manifest.json").read_text() == "{}"


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_stale_temporaries_of_dead_processes_are_removed_and_nothing_else(tmp_path):
    dead, alive = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale = [f".data.tmp-{dead}", f".tmp-step-0000002-{dead}-0a1b2c3d", f".old-hf-{dead}-deadbeef"]
        for name in stale:
            (tmp_path / name).mkdir()
            (tmp_path / name / "train.bin").write_bytes(b"\0" * 10)
        (tmp_path / f".tmp-metrics.csv-{dead}").write_text("half")  # an atomic_file temporary
        kept = [f".data.tmp-{alive.pid}", "data.tmp-1", ".tmp-notes", "my.tmp-folder", f"run-{dead}"]
        for name in kept:
            (tmp_path / name).mkdir()
        removed = remove_stale_temporaries(tmp_path)
        assert sorted(p.name for p in removed) == sorted([*stale, f".tmp-metrics.csv-{dead}"])
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    finally:
        alive.kill()
        alive.wait()
