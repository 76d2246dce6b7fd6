"""``buildlm eval`` in subprocesses: results, the report table, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from buildlm.eval.choice import score_choices
from buildlm.eval.perplexity import evaluate_perplexity
from buildlm.eval.report import build_report, format_report
from buildlm.infer.load import load_model


def run_here(capsys, *args) -> tuple[int, str, str]:
    """The same command in this process (through the same dispatcher): no start-up cost."""
    from buildlm.cli import main

    try:
        main(["eval", *map(str, args)])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def without_device_line(stderr: str) -> str:
    """``stderr`` less the line saying which device the command runs on (printed before the
    model loads, so before the errors found after loading)."""
    return "".join(line for line in stderr.splitlines(True) if not line.startswith("device: "))


def run(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "buildlm", "eval", *map(str, args)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_perplexity_and_choice_commands(planted, tmp_path, capsys):
    out = run("perplexity", "--model", planted.path, "--data", "the-verdict", "--context", "64",
              "--stride", "32", "--max-tokens", "300", "--device", "cpu", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    model, tokenizer = load_model(planted.path)
    from buildlm.data.corpora import load_corpus

    want = evaluate_perplexity(model, tokenizer, load_corpus("the-verdict"), 64, 32, max_tokens=300)
    assert got["tokens"] == want.tokens == 299
    assert got["loss"] == pytest.approx(want.loss, rel=1e-5)
    assert got["bpb"] == pytest.approx(want.bpb, rel=1e-5)

    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(
            json.dumps({"context": i.context, "endings": i.endings, "label": i.label}) + "\n"
            for i in planted.items
        )
    )
    code, stdout, stderr = run_here(
        capsys, "choice", "--model", planted.path, "--data", items, "--device", "cpu", "--json"
    )
    assert code == 0, stderr
    got = json.loads(stdout)
    # guessing: the six items have 4, 3, 4, 4, 2 and 3 endings
    chance = (1 / 4 + 1 / 3 + 1 / 4 + 1 / 4 + 1 / 2 + 1 / 3) / 6
    assert got == {"acc": 1.0, "acc_norm": 1.0, "n": len(planted.items), "chance": pytest.approx(chance)}
    code, stdout, stderr = run_here(capsys, "choice", "--model", planted.path, "--data", items, "--device", "cpu")
    assert code == 0, stderr
    assert stdout.strip().endswith(f"| {len(planted.items)} items | chance {chance:.4f} (guessing)")


def test_report_compares_models(planted, hf_text_model, tmp_path):
    out_file = tmp_path / "report.md"
    args = ["report", "--models", planted.path, hf_text_model.path, "--data", "the-verdict",
            "--max-tokens", "200", "--context", "64", "--limit", "12", "--device", "cpu",
            "--out", out_file]  # fmt: skip
    out = run(*args)
    assert out.returncode == 0, out.stderr
    assert out_file.read_text() == out.stdout
    lines = [line for line in out.stdout.splitlines() if line.startswith("|")]
    assert lines[0] == "| model | params | loss | ppl | bpb | tokens | acc | acc_norm | items |"
    assert len(lines) == 4 and str(planted.path) in lines[2] and str(hf_text_model.path) in lines[3]
    # the same figures as the library computes
    rows = build_report([str(planted.path)], "the-verdict", "shakespeare-next-line", context=64,
                        max_tokens=200, limit=12, device="cpu")  # fmt: skip
    assert format_report(rows).splitlines()[-1] == lines[2]
    model, tokenizer = load_model(planted.path)
    from buildlm.eval.choice import load_choice_items

    choice = score_choices(model, tokenizer, load_choice_items("shakespeare-next-line", 12))
    assert rows[0].choice.acc == choice.acc and rows[0].choice.n == 12


def bad_file(tmp_path):
    bad = tmp_path / "items.jsonl"
    bad.write_text('{"context": "a", "endings": ["b", "c"], "label": 0}\n'
                   '{"context": "a", "endings": ["b", "c"], "label": 5}\n')  # fmt: skip
    return bad


def test_errors_are_one_line_and_exit_1_in_a_subprocess(planted, tmp_path):
    out = run("choice", "--model", planted.path, "--data", bad_file(tmp_path), "--device", "cpu")
    assert out.returncode == 1, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("buildlm eval: error: ")
    assert "items.jsonl:2: label 5 is out of range for 2 endings" in out.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["choice", "--data", "{bad}"], "items.jsonl:2: label 5 is out of range for 2 endings"),
        (["choice", "--data", "missing.jsonl"], "no multiple-choice file"),
        (["perplexity", "--data", "missing.txt"], "no text file at"),
        (["perplexity", "--data", "the-verdict", "--context", "16", "--stride", "17"],
         "stride must lie in [1, context=16]"),
        (["perplexity", "--data", "the-verdict", "--context", "100"],
         "exceeds the model's context_length=64"),
        (["choice", "--data", "shakespeare-next-line", "--limit", "0"], "--limit must be at least 1"),
        (["report", "--models", "{model}", "--data", "none", "--choice", "none"],
         "nothing to evaluate"),
    ],
)  # fmt: skip
def test_errors_are_one_line_and_exit_1(planted, tmp_path, capsys, args, message):
    subs = {"{bad}": str(bad_file(tmp_path)), "{model}": str(planted.path)}
    args = [subs.get(a, a) for a in args]
    if args[0] != "report":
        args += ["--model", planted.path]
    code, _, stderr = run_here(capsys, *args, "--device", "cpu")
    assert code == 1, stderr
    stderr = without_device_line(stderr)
    assert stderr.count("\n") == 1 and stderr.startswith("buildlm eval: error: ")
    assert message in stderr


def test_missing_model_folder_is_one_line(tmp_path):
    out = run("choice", "--model", tmp_path / "nope", "--data", "shakespeare-next-line",
              "--limit", "2", "--device", "cpu")  # fmt: skip
    assert out.returncode == 1 and without_device_line(out.stderr).count("\n") == 1, out.stderr
