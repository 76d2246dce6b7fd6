"""Bundled configs by name: ``--config verdict-tiny`` / ``--config classify`` from any folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from buildlm.train.bundled_configs import (
    CONFIG_DIR,
    bundled_names,
    resolve_config,
    resolve_config_args,
)

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "buildlm", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


def test_the_bundled_names():
    assert {"shakespeare-small", "verdict-tiny", "gpu-shakespeare-small"} <= set(bundled_names())
    assert bundled_names("finetune") == ["classify", "dpo", "grpo", "instruct"]


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.rglob("*.yaml")), ids=lambda p: p.stem)
def test_no_bundled_config_pins_a_run_name(path):
    # a fixed name makes the second run of the same config fail ("already holds checkpoints")
    assert "name" not in (yaml.safe_load(path.read_text()).get("train") or {})


@pytest.mark.parametrize(
    ("value", "subdir", "expected"),
    [
        ("verdict-tiny", "", "verdict-tiny.yaml"),
        ("verdict-tiny.yaml", "", "verdict-tiny.yaml"),
        ("configs/verdict-tiny.yaml", "", "verdict-tiny.yaml"),  # the repository spelling
        ("classify", "finetune", "finetune/classify.yaml"),
        ("finetune/classify", "finetune", "finetune/classify.yaml"),
        ("configs/finetune/dpo.yaml", "finetune", "finetune/dpo.yaml"),
    ],
)
def test_names_find_the_bundled_file(value, subdir, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Path(resolve_config(value, subdir)) == CONFIG_DIR / expected


def test_a_file_of_the_users_wins_over_a_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "verdict-tiny").write_text("train:\n  max_steps: 3\n")
    assert resolve_config("verdict-tiny") == "verdict-tiny"
    argv = ["--train.lr", "1", "--config=verdict-tiny", "--config", "shakespeare-small"]
    assert resolve_config_args(argv) == ["--train.lr", "1", "--config=verdict-tiny", "--config", str(CONFIG_DIR / "shakespeare-small.yaml")]


@pytest.mark.parametrize("value", ["nope", "../pyproject", "finetune/../../../setup"])
def test_unknown_names_list_the_bundled_ones(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="verdict-tiny") as err:
        resolve_config(value)
    assert repr(value) in str(err.value) and "\n" not in str(err.value)


def test_train_loads_a_bundled_config_by_name_from_an_empty_folder(tmp_path):
    proc = run_cli("train", "--config", "verdict-tiny", "--train.max_steps", "7", "--print_config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["data"]["inputs"] == ["the-verdict"] and cfg["tokenizer"]["vocab_size"] == 512
    assert cfg["train"]["max_steps"] == 7 and cfg["train"]["name"] is None
    assert list(tmp_path.iterdir()) == []  # printing the settings writes nothing


def test_finetune_loads_a_bundled_config_by_short_name(tmp_path, monkeypatch):
    from buildlm.finetune.cli import parse

    monkeypatch.chdir(tmp_path)
    model, data, train, _, config, _ = parse("classify", ["--config", "classify", "--model", "m"])
    assert data.data == "shakespeare-plays" and config.pooling == "mean" and train.name is None


def test_an_unknown_config_is_one_line(tmp_path):
    for command in (["train"], ["finetune", "classify", "--model", "m"]):
        proc = run_cli(*command, "--config", "shakespeare-tiny", cwd=tmp_path)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert "'shakespeare-tiny'" in lines[0] and "one of:" in lines[0]
    assert "verdict-tiny" in lines[0] or "classify" in lines[0]
