"""A disk that refuses a write (full, read-only, over a size limit) is one line naming the path
and the fix, never a traceback, and leaves no half-written folder.

The refusal is real: the command runs under ``RLIMIT_FSIZE`` (``ulimit -f``), so the kernel fails
the write that crosses the limit with ``EFBIG``, the way a full disk fails it with ``ENOSPC``
(tests run as root, which no folder permission stops, and cannot mount a tiny file system).
``SIGXFSZ`` is ignored so the write returns the error instead of killing the process.
"""

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from buildlm.data.corpora import load_corpus
from buildlm.errors import storage_error_message
from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import Tokenizer
from buildlm.train.checkpoint import save_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from cli_run import assert_one_line_error  # noqa: E402

LIMIT = 64 * 1024  # bytes: more than any config or tokenizer file here, less than the weights


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # kept across exec
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def limited_buildlm(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "buildlm", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300, preexec_fn=_limit_file_size,
    )  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tok = Tokenizer.train(load_corpus("the-verdict"), 300, progress=False)
    torch.manual_seed(0)
    model = GPT(ModelConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=64, d_model=64, n_layers=2))
    folder = tmp_path_factory.mktemp("run")
    save_checkpoint(folder, 1, model, {"model": model.config.to_dict()}, tokenizer=tok)
    return folder


@pytest.mark.parametrize("direction", ["--to", "--from"])
def test_convert_onto_a_disk_that_refuses_the_weights(run, tmp_path, direction):
    src = run / "checkpoints" / "step-0000001"
    if direction == "--from":  # a Hugging Face folder to read
        subprocess.run([sys.executable, "-m", "buildlm", "convert", "--to", "hf", src, "--out", tmp_path / "hf"], check=True)
        src = tmp_path / "hf"
    out = tmp_path / "out"
    proc = limited_buildlm("convert", direction, "hf", src, "--out", out, cwd=tmp_path)
    assert_one_line_error(proc, f"'{out}", "size limit", "ulimit -f")  # the folder or the file in it
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_checkpoint_save_onto_a_disk_that_refuses_it(run, tmp_path):
    """`buildlm train` saving its checkpoint: safetensors' own error type wraps the OSError."""
    (tmp_path / "book.txt").write_text(load_corpus("the-verdict"))
    proc = limited_buildlm(
        "train", "--model.preset", "tiny", "--model.d_model", "64", "--model.n_layers", "2",
        "--train.context_length", "32", "--train.batch_size", "2", "--train.max_steps", "1",
        "--train.eval_batches", "1", "--train.progress", "false", "--train.tensorboard", "false",
        "--train.num_threads", "1", "--train.time_budget_s", "null", "--train.sample_tokens", "4",
        "--tokenizer.vocab_size", "300", "--data.inputs", "[book.txt]", "--train.name", "r", cwd=tmp_path,
    )  # fmt: skip
    step = tmp_path / "runs" / "r" / "checkpoints" / "step-0000001"
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.splitlines()[-1]  # after the progress bars of tokenizing
    assert last.startswith("buildlm train: error: 'runs/r/checkpoints/step-0000001"), last
    assert "size limit" in last
    assert not step.exists()
    assert not [p for p in step.parent.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.ENOSPC, "no space left"), (errno.EROFS, "the file system is read-only"), (errno.EACCES, "permission denied")],
)
def test_storage_errors_read_as_one_line_with_the_fix(code, words):
    message = storage_error_message(OSError(code, os.strerror(code), "runs/x/model.safetensors"))
    assert message.startswith("'runs/x/model.safetensors': " + words) and "; " in message
    assert storage_error_message(OSError(errno.EIO, "I/O error")) is None  # a bug keeps its traceback
