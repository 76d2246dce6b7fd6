"""`buildlm tokenizer train --vocab-size`: a size the text cannot give, or an absurd one, is
refused in one line before any merging; a run that falls short says so."""

import os
import subprocess
import sys

import pytest

from buildlm.tokenizer.training import train_bpe


def run(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "buildlm", "tokenizer", "train", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("vocab_size", "needle"),
    [(100_000_000, "more than this text can give"), (2**33, "absurd")],
)
def test_an_unreachable_vocab_size_is_refused_in_one_line(tmp_path, vocab_size, needle):
    proc = run("--input", "the-verdict", "--vocab-size", vocab_size, "--out", "tok.json", "--quiet", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and f"{vocab_size:,}" in lines[0], lines
    assert not (tmp_path / "tok.json").exists()


def test_the_limit_named_in_the_refusal_is_the_most_the_text_allows(tmp_path):
    """"aaaa bb" allows 3 + 2 merges ("aaaa" -> "aa"+"a"+"a" ...): at most 256 + 5 + 1 tokens."""
    with pytest.raises(ValueError, match="at most 262 tokens"):
        train_bpe("aaaa bb", 263, strict=True, progress=False)
    assert len(train_bpe("aaaa bb", 262, strict=True, progress=False)) <= 5


def test_falling_short_of_the_size_asked_is_said(tmp_path):
    """"aaaa" passes the bound (3 merges) but needs only 2: aa, then aa+aa."""
    (tmp_path / "a.txt").write_text("aaaa")
    proc = run("--input", "a.txt", "--vocab-size", 260, "--out", "tok.json", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "note: stopped at 259 of the 260 tokens asked" in proc.stderr
    assert (tmp_path / "tok.json").is_file()
