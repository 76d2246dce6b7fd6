"""`buildlm convert` and `buildlm prepare` never delete or overwrite a user's files (real
folders, real subprocesses); prepare's left-overs and bad block sizes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from buildlm.atomic import OUTPUTS
from buildlm.data.corpora import load_corpus
from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import Tokenizer
from buildlm.train.checkpoint import save_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from cli_run import assert_one_line_error, buildlm  # noqa: E402


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (subfolders included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tok = Tokenizer.train(load_corpus("the-verdict"), 300, progress=False)
    torch.manual_seed(0)
    model = GPT(ModelConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=32, d_model=64, n_layers=1))
    folder = tmp_path_factory.mktemp("run")
    save_checkpoint(folder, 1, model, {"model": model.config.to_dict()}, tokenizer=tok)
    return folder


def test_convert_refuses_a_folder_of_user_files_and_leaves_every_file(run, tmp_path):
    p = tmp_path / "p"
    (p / "src").mkdir(parents=True)
    (p / "data").mkdir()
    (p / "config.json").write_text("{}")
    (p / "src" / "main.py").write_text("code")
    (p / "data" / "table.csv").write_text("a,b\n")
    before = snapshot(p)
    for force in ([], ["--force"]):
        proc = buildlm("convert", "--to", "hf", run, "--out", p, *force, cwd=tmp_path, check=False)
        assert_one_line_error(proc, "config.json", "buildlm did not write", "choose another folder")
        assert snapshot(p) == before
        assert sorted(x.name for x in tmp_path.iterdir()) == ["p"]  # no temporary, no lock left


def test_convert_replaces_its_own_output_only_with_force_and_keeps_a_readme(run, tmp_path):
    out = tmp_path / "hf"
    buildlm("convert", "--to", "hf", run, "--out", out, cwd=tmp_path)
    assert json.loads((out / "config.json").read_text())["model_type"] == "gpt2"
    (out / "README.md").write_text("# my model card")
    (out / "LICENSE").write_text("MIT")
    before = snapshot(out)

    proc = buildlm("convert", "--to", "hf", run, "--out", out, cwd=tmp_path, check=False)
    assert_one_line_error(proc, "earlier buildlm output", "--force", "LICENSE, README.md, are kept")
    assert snapshot(out) == before

    buildlm("convert", "--to", "hf", run, "--out", out, "--force", cwd=tmp_path)
    assert (out / "README.md").read_text() == "# my model card" and (out / "LICENSE").read_text() == "MIT"
    assert json.loads((out / OUTPUTS).read_text())["files"] == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"
    ]  # fmt: skip
    # and the folder still is a whole model: back to a buildlm checkpoint and out again
    buildlm("convert", "--from", "hf", out, "--out", tmp_path / "back", cwd=tmp_path)
    assert (tmp_path / "back" / "model.safetensors").is_file()


def test_prepare_keeps_user_files_and_replaces_its_output_only_with_force(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "book.txt").write_text("my own text\n")  # written beside, never over
    args = ["prepare", "--input", "the-verdict", "--out", data, "--quiet"]
    buildlm(*args, cwd=tmp_path)
    first = snapshot(data)
    assert {"book.txt", "train.bin", "val.bin", "manifest.json", "tokenizer.json", OUTPUTS} == set(first)

    proc = buildlm(*args, "--val-fraction", "0.2", cwd=tmp_path, check=False)
    assert_one_line_error(proc, "earlier buildlm output", "--force", "book.txt, are kept")
    assert snapshot(data) == first

    buildlm(*args, "--val-fraction", "0.2", "--force", cwd=tmp_path)
    assert (data / "book.txt").read_text() == "my own text\n"
    assert json.loads((data / "manifest.json").read_text())["val_fraction"] == 0.2

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.bin").write_bytes(b"my tokens")
    proc = buildlm("prepare", "--input", "the-verdict", "--out", mine, "--quiet", "--force", cwd=tmp_path, check=False)
    assert_one_line_error(proc, "train.bin", "buildlm did not write")
    assert snapshot(mine) == {"train.bin": b"my tokens"}


@pytest.mark.parametrize("block_mb", ["0", "-1", "nan"])
def test_prepare_rejects_a_block_size_that_cannot_work(tmp_path, block_mb):
    proc = buildlm(
        "prepare", "--input", "the-verdict", "--out", "data", "--block-mb", block_mb, cwd=tmp_path, check=False
    )
    assert_one_line_error(proc, "--block-mb", block_mb)
    assert not (tmp_path / "data").exists()


def test_a_killed_prepare_leaves_no_temporary_for_long(tmp_path):
    text = load_corpus("the-verdict")
    (tmp_path / "big.txt").write_text(text * (6_000_000 // len(text)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "buildlm", "prepare", "--input", "big.txt", "--out", "data", "--quiet",
         "--workers", "1", "--block-mb", "0.1"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120

    def temporaries():
        return [p for p in tmp_path.iterdir() if "tmp" in p.name]

    try:
        while not any((p / "train.bin").is_file() and (p / "train.bin").stat().st_size for p in temporaries()):
            assert proc.poll() is None and time.monotonic() < deadline, "prepare ended before it was killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert temporaries()  # what the killed process left
    (tmp_path / "small.txt").write_text(text)
    buildlm("prepare", "--input", "small.txt", "--out", "data", "--quiet", cwd=tmp_path)
    assert temporaries() == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
