"""``buildlm convert`` and ``buildlm download``: errors are one line, never a traceback."""

import os
import subprocess
import sys

import pytest
import torch

from buildlm.checkpoint_format import load_checkpoint
from buildlm.hub.convert import main as convert
from buildlm.hub.safetensors_io import SafetensorsReader


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "buildlm", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def _one_line_error(result: subprocess.CompletedProcess, command: str, fragment: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("buildlm")]
    assert len(lines) == 1 and lines[0].startswith(f"buildlm {command}: error:"), result.stderr
    assert fragment in lines[0]


def test_convert_errors_are_one_line(hub, tmp_path):
    hub.make_hf("llama", **hub.llama_shape()).save_pretrained(tmp_path / "hf")
    path = tmp_path / "hf" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    result = _run("convert", "--from", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "o"))
    _one_line_error(result, "convert", "the file is truncated")
    assert not (tmp_path / "o").exists()


def test_download_offline_says_how_to_use_a_local_folder(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    result = _run("download", "openai-community/gpt2", "--out", str(tmp_path / "gpt2"), env=env)
    _one_line_error(result, "download", "buildlm convert --from hf DIR --out DIR")


@pytest.mark.parametrize(
    ("argv", "error", "message"),
    [
        (["--from", "hf", "{tmp}/missing", "--out", "{tmp}/o"], FileNotFoundError, "not found"),
        (["--to", "hf", "{tmp}/missing", "--out", "{tmp}/o"], FileNotFoundError, "not found"),
        (["--from", "hf", "{tmp}", "--out", "{tmp}"], ValueError, "--out must differ"),
        (["--to", "hf", "{tmp}", "--out", "{tmp}/o", "--dtype", "bfloat16"], ValueError, "--dtype"),
    ],
)
def test_convert_argument_errors(tmp_path, argv, error, message):
    with pytest.raises(error, match=message):
        convert([a.format(tmp=tmp_path) for a in argv])


def test_convert_from_hf_with_dtype(hub, tmp_path, capsys):
    hf = hub.make_hf("qwen3", **hub.llama_shape(head_dim=16))
    hf.save_pretrained(tmp_path / "hf")
    out = tmp_path / "c"
    convert(["--from", "hf", str(tmp_path / "hf"), "--out", str(out), "--dtype", "bfloat16"])
    assert "wrote buildlm checkpoint" in capsys.readouterr().out
    weights = SafetensorsReader(out / "model.safetensors")
    assert {weights.dtype(n) for n in weights.names()} == {torch.bfloat16}
    expected = hf.model.layers[1].self_attn.k_proj.weight.to(torch.bfloat16)
    rows = slice(64, 64 + expected.shape[0])  # k's rows follow q's 4 heads x 16 in attn.qkv
    assert torch.equal(weights.get("blocks.1.attn.qkv.weight")[rows], expected)
    loaded = load_checkpoint(out)
    assert loaded.tokenizer is None and loaded.model.config.qk_norm
