"""Every command's help shows its defaults, and every option takes ``-`` or ``_`` alike."""

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from buildlm.cli_parser import Parser, underscore_flags

ROOT = Path(__file__).resolve().parents[1]
# the argparse-based commands: module -> the function that builds the parser
ARGPARSE_COMMANDS = {
    "buildlm.infer.cli": "build_parser",
    "buildlm.infer.chat": "build_parser",
    "buildlm.serve.cli": "build_parser",
    "buildlm.eval.cli": "build_parser",
    "buildlm.data.cli": "build_parser",
    "buildlm.tokenizer.cli": "_parser",
    "buildlm.finetune.classify_cli": "build_parser",
    "buildlm.viz.explain_cli": "build_parser",
    "buildlm.hub.convert": "build_parser",
    "buildlm.hub.download": "build_parser",
}


def _parsers(parser: argparse.ArgumentParser):
    """The parser and its subcommands' parsers."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def all_parsers():
    for module, func in ARGPARSE_COMMANDS.items():
        for parser in _parsers(getattr(importlib.import_module(module), func)()):
            yield parser.prog, parser


@pytest.mark.parametrize(("prog", "parser"), list(all_parsers()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_option_is_dashed_shows_its_default_and_takes_underscores(prog, parser):
    assert isinstance(parser, Parser), f"{prog} does not use buildlm.cli_parser.Parser"
    assert "usage:" in parser.format_help()  # the help formats (a stray % would raise here)
    for action in parser._actions:
        for option in (o for o in action.option_strings if o.startswith("--")):
            assert "_" not in option, f"{prog}: {option} is documented with an underscore"
            underscored = "--" + option[2:].replace("-", "_")
            assert parser._dashed([underscored, "x"]) == [option, "x"]
            assert parser._dashed([f"{underscored}=3"]) == [f"{option}=3"]
        if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
            assert "default" in (action.help or ""), f"{prog} {action.option_strings}: no default in help"


def test_generate_help_shows_defaults_and_parses_both_spellings():
    from buildlm.infer.cli import build_parser

    parser = build_parser()
    help_ = " ".join(parser.format_help().split())
    assert "--max-new-tokens MAX_NEW_TOKENS (default: 200)" in help_
    assert "0 = greedy (default: 0.8)" in help_
    assert "text to continue (default: a newline)" in help_  # said once, not twice
    assert "(default: None)" not in help_ and "(default: False)" not in help_
    for argv in (["--max-new-tokens", "5"], ["--max_new_tokens", "5"], ["--max_new_tokens=5"]):
        args = parser.parse_args(["--model", "m", *argv, "--top_k", "3", "--num_samples", "2"])
        assert (args.max_new_tokens, args.top_k, args.num_samples) == (5, 3, 2)
    # values are never rewritten, and everything after -- is a value
    args = parser.parse_args(["--model", "my_model", "--prompt=--max_new_tokens", "--stop", "a_b"])
    assert (args.model, args.prompt, args.stop) == ("my_model", "--max_new_tokens", ["a_b"])


@pytest.mark.parametrize("module", ["buildlm.infer.cli", "buildlm.infer.chat"])
def test_generate_and_chat_help_says_every_default_even_off_or_none(module):
    parser = importlib.import_module(module).build_parser()
    for action in parser._actions:
        if not action.option_strings or action.required or action.nargs == 0:
            continue  # positionals, --model, switches
        assert "default" in (action.help or ""), f"{module} {action.option_strings}: no default"
    help_ = " ".join(parser.format_help().split())
    entries = {e.split()[0]: e for e in help_.split(" --")[1:] if not e.endswith("]")}
    for option in ("top-k", "top-p", "min-p", "repetition-penalty"):
        assert entries[option].endswith("(default: off)"), entries[option]
    assert entries["frequency-penalty"].endswith("(default: 0.0)")
    assert entries["stop"].endswith("(default: none)")
    assert "(default: None)" not in help_ and "(default: [])" not in help_


def test_a_zero_default_is_shown_and_false_is_not():
    parser = Parser(prog="x")
    parser.add_argument("--penalty", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--flag", action="store_true")
    parser.add_argument("--tag", action="append", default=[], help="a tag")
    parser.add_argument("--cut", type=int, default=None, help="a cut")
    help_ = " ".join(parser.format_help().split())
    assert "--penalty PENALTY (default: 0.0)" in help_ and "--count COUNT (default: 0)" in help_
    assert "--flag (default" not in help_ and "a tag (default: none)" in help_
    assert "a cut (default" not in help_  # only the option can say what None means


def test_subcommands_take_both_spellings():
    from buildlm.eval.cli import build_parser

    args = build_parser().parse_args(["choice", "--model", "m", "--data", "d", "--batch_size", "3"])
    assert args.batch_size == 3


def test_underscore_flags_only_touches_option_names():
    argv = ["--train.max-steps", "3", "--val-data=a-b.jsonl", "--model", "my-run", "--", "--x-y"]
    assert underscore_flags(argv) == ["--train.max_steps", "3", "--val_data=a-b.jsonl", "--model", "my-run", "--", "--x-y"]


def test_train_and_finetune_take_dashes_too(tmp_path, monkeypatch):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "buildlm", "train", "--train.max-steps", "7", "--tokenizer.vocab-size=300", "--print-config"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["train"]["max_steps"] == 7 and cfg["tokenizer"]["vocab_size"] == 300

    from buildlm.finetune.cli import parse

    monkeypatch.chdir(tmp_path)
    _, data, train, _, _, _ = parse("classify", ["--model", "m", "--data", "d.csv", "--val-data", "v.csv", "--train.max-steps", "4"])
    assert (data.val_data, train.max_steps) == ("v.csv", 4)
