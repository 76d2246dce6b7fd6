"""One writer per folder (`buildlm.lock`), with real processes: a live holder is refused by
name, a dead one's lock is taken over, and two `buildlm train` runs of one name cannot mix."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buildlm.errors import FolderInUseError
from buildlm.lock import FolderLock, folder_lock, lock_path

sys.path.insert(0, str(Path(__file__).parent))
from cli_run import assert_one_line_error, buildlm  # noqa: E402

TINY = [
    "--model.preset", "tiny", "--train.context_length", "32", "--model.d_model", "64", "--model.n_layers", "2",
    "--train.batch_size", "4", "--train.eval_batches", "2", "--train.progress", "false",
    "--train.tensorboard", "false", "--train.num_threads", "1", "--train.sample_tokens", "8",
    "--train.time_budget_s", "null",
]  # fmt: skip


HOLD = """
import sys, time
from buildlm.lock import folder_lock
lock = folder_lock(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    """A real process that takes ``folder``'s lock and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_is_refused_by_pid_and_a_killed_one_is_taken_over(tmp_path):
    folder = tmp_path / "data"
    holder = _holder(folder)
    try:
        with pytest.raises(FolderInUseError, match=rf"being written by process {holder.pid}\b.*kill {holder.pid}"):
            folder_lock(folder)
        proc = buildlm("prepare", "--input", "the-verdict", "--out", folder, "--quiet", cwd=tmp_path, check=False)
        assert_one_line_error(proc, f"process {holder.pid}", "choose another --out")
        assert not folder.exists()  # refused before anything was written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(folder).is_file()  # a killed process cleans nothing up
    notes = []
    with FolderLock(folder, log=notes.append):
        assert lock_path(folder).read_text().startswith(f'{{"pid": {os.getpid()}')
    assert len(notes) == 1 and f"left by process {holder.pid}" in notes[0] and "no longer runs" in notes[0]
    assert not lock_path(folder).exists()  # released: the file is gone


@pytest.mark.parametrize("task", ["instruct", "classify"])
def test_a_finetune_into_a_folder_in_use_is_refused(tmp_path, task):
    holder = _holder(tmp_path / "ft")
    try:
        data = "instruct-tasks" if task == "instruct" else "shakespeare-plays"
        proc = buildlm("finetune", task, "--model", "no-such-model", "--data", data, "--out", "ft", cwd=tmp_path, check=False)
        assert_one_line_error(proc, f"process {holder.pid}", "pick another --out")
    finally:
        holder.kill()
        holder.wait()


def test_one_process_cannot_take_a_lock_it_holds_twice(tmp_path):
    with folder_lock(tmp_path / "run"), pytest.raises(FolderInUseError, match=f"process {os.getpid()}"):
        folder_lock(tmp_path / "run")
    with folder_lock(tmp_path / "run"):  # released, so free again
        pass


def test_two_trainings_of_one_name_cannot_run_at_once(tmp_path):
    (tmp_path / "book.txt").write_text("It was the best of times, it was the worst of times.\n" * 400)
    args = ["train", *TINY, "--data.inputs", "[book.txt]", "--tokenizer.vocab_size", "300", "--train.name", "same"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "buildlm", *args, "--train.max_steps", "100000"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lock = lock_path(tmp_path / "runs" / "same")
    try:
        deadline = time.monotonic() + 120
        while not lock.is_file() or str(first.pid) not in lock.read_text():
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
            time.sleep(0.1)
        second = buildlm(*args, "--train.max_steps", "2", cwd=tmp_path, check=False)
        assert_one_line_error(second, f"process {first.pid}", "pick another --train.name")
        assert first.poll() is None  # the first run goes on, alone
    finally:
        first.kill()
        first.wait()
