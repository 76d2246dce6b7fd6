"""``buildlm finetune`` and ``buildlm classify``: presets, a whole CLI run, one-line errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from buildlm.cli import main as buildlm

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--train.num_threads", "1", "--train.progress", "false", "--train.tensorboard", "false", "--train.peak_flops", "1e12"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "buildlm", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("task", ["classify", "instruct", "dpo", "grpo"])
def test_presets_parse(task):
    from buildlm.finetune.cli import parse

    model, data, train, lora, config, out = parse(task, ["--config", str(ROOT / f"src/buildlm/configs/finetune/{task}.yaml"), "--model", "m"])
    assert model == "m" and data.data and train.time_budget_s is None and lora.rank == 0
    assert type(config).__name__.lower().startswith(task[:3])


def test_help_lists_tasks_and_options(capsys):
    buildlm(["finetune", "--help"])
    usage = capsys.readouterr().out
    assert all(t in usage for t in ("classify", "instruct", "dpo", "data"))
    with pytest.raises(SystemExit) as exit_:
        buildlm(["finetune", "instruct", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--instruct.template", "--lora.rank", "--train.lr", "--data", "--model"))


def test_cli_classify_run_then_buildlm_classify(tiny_base, tmp_path, capsys, ft_train):
    out = tmp_path / "clf"
    buildlm(["finetune", "classify", "--model", str(tiny_base), "--data", "shakespeare-plays:julius_caesar,romeo_and_juliet",
             "--train.max_steps", "3", "--lora.rank", "2", "--out", str(out), *FAST])  # fmt: skip
    log = capsys.readouterr().out
    assert "majority-class baseline" in log and "macro F1" in log
    assert {"eval.json", "adapter.safetensors", "confusion.png", "metrics.csv"} <= {p.name for p in out.iterdir()}
    buildlm(["classify", "--model", str(out), "--json", "Friends, Romans, countrymen", "O Romeo"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["Friends, Romans, countrymen", "O Romeo"]
    assert all(r["label"] in ("julius_caesar", "romeo_and_juliet") for r in rows)


def test_finetune_data_writes_bundled_splits(tmp_path, capsys):
    buildlm(["finetune", "data", "instruct-prefs:add", str(tmp_path)])
    lines = (tmp_path / "test.jsonl").read_text().splitlines()
    assert len(lines) == 50 and set(json.loads(lines[0])) == {"instruction", "input", "chosen", "rejected", "task"}


def test_bad_inputs_are_one_line_errors(tiny_base, tmp_path):
    """Each case runs the real command in a fresh process: exit status 1, one line on stderr."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n')
    good = tmp_path / "good.jsonl"
    good.write_text('{"instruction": "a", "input": "x", "output": "b"}\n' * 4)
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    cases = [
        (["finetune", "instruct", "--data", str(bad)], r"bad\.jsonl:2: malformed JSON"),
        (["finetune", "instruct", "--data", str(good), "--instruct.template", "Q: {question} A:"],
         r"good\.jsonl:\d: the prompt template uses the field 'question'"),
        (["finetune", "classify", "--data", str(empty)], "the dataset is empty"),
        (["finetune", "dpo", "--data", "shakespeare-plays"], "is a classify dataset, not a dpo one"),
    ]  # fmt: skip
    for args, message in cases:
        result = run_cli(*args[:2], "--model", str(tiny_base), "--out", str(tmp_path / "run"), *args[2:], *FAST)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and re.search(message, result.stderr), result.stderr
        assert result.stderr.startswith("buildlm finetune: error: ")
    result = run_cli("finetune", "poetry")
    assert result.returncode == 1 and "unknown fine-tuning task 'poetry'" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                    reason="needs a machine without CUDA and Apple MPS")  # fmt: skip
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["finetune", "instruct", "--train.device", "cuda"], "--train.device 'cuda': "),
        (["finetune", "grpo", "--train.device", "mps"], "--train.device 'mps': no Apple MPS"),
        (["classify", "--device", "cuda:1", "a text"], "--device 'cuda:1': "),
    ],
)  # fmt: skip
def test_an_absent_device_is_one_line_before_anything_is_loaded(tmp_path, args, fragment):
    """The device is checked first: the model folder named here does not even exist."""
    result = run_cli(*args, "--model", str(tmp_path / "nowhere"), *(["--out", str(tmp_path / "run")] if args[0] == "finetune" else []))
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and fragment in result.stderr and "cpu or auto" in result.stderr
    assert not (tmp_path / "run").exists()
