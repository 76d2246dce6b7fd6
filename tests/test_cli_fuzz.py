"""No traceback ever reaches a user: every command, every flag, odd values (hypothesis).

Each example takes a command line that works (a tiny checkpoint, a small text file), sets one of
the command's own flags -- read from its parser, so a new flag is fuzzed without editing this
file -- to an odd value (huge or negative numbers, nan, empty text, a missing path, a folder, a
file of undecodable bytes) and runs ``buildlm.cli.main`` in this process. The command may
succeed or fail, but a failure must be the CLI's one clean path: ``SystemExit`` with a non-zero
code and a short message, never an exception that would print a traceback.

Commands that serve forever, reach the network or start other processes (``serve``,
``download``, ``eval harness``, ``train --nproc``) are left out; ``serve``'s argument checks
are covered by ``tests/serve/test_cli.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SKIP_FLAGS = {"-h", "--help", "--nproc", "--print_config", "--version", "--stats", "--config",
              "--resume", "--train.distributed", "--train.compile"}  # launch or compile: slow


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A tiny checkpoint, a text file, an undecodable file and a folder to point flags at."""
    from buildlm.data.corpora import load_corpus
    from buildlm.model import GPT, ModelConfig
    from buildlm.tokenizer import Tokenizer
    from buildlm.train.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("fuzz")
    text = load_corpus("the-verdict")[:4000]
    tok = Tokenizer.train(text, 280, progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig.preset(
        "tiny", vocab_size=tok.vocab_size, context_length=32, d_model=32, n_layers=1, n_heads=2
    )
    ckpt = save_checkpoint(root / "run", 1, GPT(cfg), {"model": cfg.to_dict()}, tokenizer=tok)
    (root / "text.txt").write_text(text)
    from buildlm.data.shards import prepare_shards

    prepare_shards([str(root / "text.txt")], tok, root / "shards", progress=False)
    (root / "binary.bin").write_bytes(b"\xff\xfe\x00\x81" * 64)
    (root / "folder").mkdir()
    tok.save(root / "tokenizer.json")
    return {"root": root, "ckpt": ckpt, "text": root / "text.txt", "tok": root / "tokenizer.json",
            "shards": root / "shards"}  # fmt: skip


def base_commands(w: dict[str, Path]) -> dict[str, list[str]]:
    """A command line per command that succeeds quickly as it stands."""
    ckpt, text = str(w["ckpt"]), str(w["text"])
    return {
        "generate": ["generate", "--model", ckpt, "--prompt", "I had", "--max-new-tokens", "2"],
        "chat": ["chat", "--model", ckpt, "--max-new-tokens", "2"],
        "explain": ["explain", "--model", ckpt, "--text", "I had"],
        "eval perplexity": ["eval", "perplexity", "--model", ckpt, "--data", text],
        "eval answers": ["eval", "answers", "--model", ckpt, "--data", "instruct-tasks:add",
                         "--limit", "2", "--samples", "2", "--max-new-tokens", "2"],
        "tokenizer train": ["tokenizer", "train", "--input", text, "--vocab-size", "260",
                            "--out", "t.json", "--quiet"],
        "tokenizer encode": ["tokenizer", "encode", "--tokenizer", str(w["tok"]), "--input", text,
                             "--out", "ids.txt"],
        "prepare": ["prepare", "--input", text, "--tokenizer", str(w["tok"]), "--out", "shards",
                    "--quiet"],
        "convert": ["convert", "--to", "hf", ckpt, "--out", "hf-out"],
        "train": ["train", "--data.prepared_dir", str(w["shards"]), "--model.preset", "tiny",
                  "--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads", "2",
                  "--train.context_length", "16", "--train.batch_size", "2",
                  "--train.time_budget_s", "null", "--train.max_steps", "2",
                  "--train.eval_interval", "1", "--train.eval_batches", "1",
                  "--train.sample_tokens", "2", "--train.progress", "false",
                  "--train.tensorboard", "false"],
    }  # fmt: skip


def parser_for(command: str) -> argparse.ArgumentParser:
    from buildlm.data.cli import build_parser as prepare
    from buildlm.eval.cli import build_parser as eval_parser
    from buildlm.hub.convert import build_parser as convert
    from buildlm.infer.chat import build_parser as chat
    from buildlm.infer.cli import build_parser as generate
    from buildlm.tokenizer.cli import _parser as tokenizer
    from buildlm.train.cli import build_parser as train
    from buildlm.viz.explain_cli import build_parser as explain

    top = {"generate": generate, "chat": chat, "explain": explain, "prepare": prepare,
           "convert": convert, "eval": eval_parser, "tokenizer": tokenizer,
           "train": train}[command.split()[0]]()  # fmt: skip
    if " " in command:  # the subcommand's own parser
        sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
        return sub.choices[command.split()[1]]
    return top


def flags_of(command: str) -> list[str]:
    flags = []
    for action in parser_for(command)._actions:
        if isinstance(action, argparse._SubParsersAction) or not action.option_strings:
            continue
        flag = max(action.option_strings, key=len)
        if flag not in SKIP_FLAGS:
            flags.append(flag)
    return sorted(flags)


COMMANDS = ["generate", "chat", "explain", "eval perplexity", "eval answers", "tokenizer train",
            "tokenizer encode", "prepare", "convert", "train"]  # fmt: skip

ODD_VALUES = st.one_of(
    st.sampled_from(["0", "-1", "-0.5", "nan", "inf", "-inf", "1e308", "", " ", "abc",
                     str(2**64), str(-(2**63) - 1), "99999999999", "<missing>", "<folder>",
                     "<binary>", "<text>", "\x00"]),  # fmt: skip
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=8),
)


class StillWorking(BaseException):
    """Raised by the alarm in a command that is still doing what it was asked after
    ``TIME_LIMIT_S`` (``--max-new-tokens 99999999999`` generates for as long as asked): not
    a failure. A ``BaseException``, so no ``except Exception`` in the command swallows it."""


TIME_LIMIT_S = 8


def run_cli(argv: list[str], cwd: Path, stdin: str = "") -> tuple[int, str]:
    """``buildlm argv`` in this process; (exit code, stderr). Any other exception propagates;
    a command still running after ``TIME_LIMIT_S`` is stopped and counts as exit 0."""
    from buildlm.cli import main

    def alarm(signum, frame):
        raise StillWorking

    err, out = io.StringIO(), io.StringIO()
    old_cwd, old_stdin = os.getcwd(), sys.stdin
    old_handler = signal.signal(signal.SIGALRM, alarm)
    os.chdir(cwd)
    sys.stdin = io.StringIO(stdin)
    code = 0
    try:
        signal.alarm(TIME_LIMIT_S)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except StillWorking:
        code = 0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
        os.chdir(old_cwd)
        sys.stdin = old_stdin
    return code, err.getvalue()


@pytest.mark.parametrize("command", COMMANDS)
def test_the_base_command_works(world, command, tmp_path):
    """The starting point of the fuzzing is a command line that succeeds."""
    code, err = run_cli(base_commands(world)[command], tmp_path, stdin="hello\n")
    assert code == 0, err


@pytest.mark.parametrize("command", COMMANDS)
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(data=st.data())
def test_odd_flag_values_never_reach_the_user_as_a_traceback(world, command, tmp_path_factory, data):
    flag = data.draw(st.sampled_from(flags_of(command)), label="flag")
    value = data.draw(ODD_VALUES, label="value")
    value = {"<missing>": str(world["root"] / "no" / "such" / "file"),
             "<folder>": str(world["root"] / "folder"),
             "<binary>": str(world["root"] / "binary.bin"),
             "<text>": str(world["text"])}.get(value, value)  # fmt: skip
    argv = base_commands(world)[command] + [f"{flag}={value}"]
    cwd = tmp_path_factory.mktemp("cwd")
    try:
        code, err = run_cli(argv, cwd, stdin="hello\n")
    except Exception as exc:  # the traceback a user would have seen
        raise AssertionError(f"buildlm {' '.join(argv)} raised {exc!r}") from exc
    if code:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert lines, f"exit {code} with no message for {flag}={value!r}"
        assert "Traceback" not in err, err
        assert "error" in lines[-1], f"{flag}={value!r}: last line {lines[-1]!r}"
