"""``python -m buildlm tokenizer ...`` end to end, in subprocesses."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from buildlm.tokenizer import Tokenizer


def run(*args: str, stdin: bytes | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "buildlm", "tokenizer", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=120,
    )


def test_train_encode_decode_round_trip(tmp_path):
    pytest.importorskip("buildlm.tokenizer.training", reason="training.py not written yet")
    corpus = tmp_path / "corpus.txt"
    text = "the quick brown fox jumps over the lazy dog.\n" * 50 + "naïve café 🤗\n"
    corpus.write_text(text, "utf-8")
    tok_path = tmp_path / "tok.json"
    result = run(
        "train", "--input", str(corpus), "--vocab-size", "300", "--out", str(tok_path), "--quiet"
    )
    assert result.returncode == 0, result.stderr.decode()
    tok = Tokenizer.load(tok_path)
    assert tok.vocab_size == 300

    encoded = run("encode", "--tokenizer", str(tok_path), "--input", str(corpus))
    assert encoded.returncode == 0, encoded.stderr.decode()
    ids = [int(x) for x in encoded.stdout.split()]
    assert ids == tok.encode(text)

    decoded = run("decode", "--tokenizer", str(tok_path), stdin=encoded.stdout)
    assert decoded.returncode == 0, decoded.stderr.decode()
    assert decoded.stdout.decode("utf-8") == text

    npy = tmp_path / "ids.npy"
    assert (
        run(
            "encode", "--tokenizer", str(tok_path), "--input", str(corpus), "--out", str(npy)
        ).returncode
        == 0
    )
    assert np.load(npy).tolist() == ids
    back = run("decode", "--tokenizer", str(tok_path), "--input", str(npy))
    assert back.stdout.decode("utf-8") == text


def test_train_on_bundled_corpus_name(tmp_path):
    pytest.importorskip("buildlm.tokenizer.training", reason="training.py not written yet")
    out = tmp_path / "verdict.json"
    result = run(
        "train",
        "--input",
        "the-verdict",
        "--vocab-size",
        "280",
        "--special",
        "--out",
        str(out),
        "--quiet",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr.decode()
    tok = Tokenizer.load(out)
    assert tok.vocab_size == 280 and tok.special_tokens == {}


def test_gpt2_by_name_with_stdin_and_specials():
    gpt2 = Tokenizer.pretrained("gpt2")
    text = "Hello world<|endoftext|>Bye"
    refused = run("encode", "--tokenizer", "gpt2", stdin=text.encode())
    assert refused.returncode == 1
    assert b"Traceback" not in refused.stderr
    assert len(refused.stderr.decode().strip().splitlines()) == 1
    assert "--allow-special" in refused.stderr.decode()
    allowed = run("encode", "--tokenizer", "gpt2", "--allow-special", stdin=text.encode())
    assert [int(x) for x in allowed.stdout.split()] == gpt2.encode(text, allowed_special="all")
    plain = run("encode", "--tokenizer", "gpt2", "--special-as-text", stdin=text.encode())
    assert [int(x) for x in plain.stdout.split()] == gpt2.encode_ordinary(text)


@pytest.mark.parametrize(
    "args, stdin, needle",
    [
        (["encode", "--tokenizer", "missing.json"], b"x", "neither a tokenizer file"),
        (["decode", "--tokenizer", "gpt2"], b"1 2 banana", "'banana' is not a token id"),
        (["decode", "--tokenizer", "gpt2"], b"1 99999999", "not in the vocabulary"),
        (["encode", "--tokenizer", "gpt2"], b"\xff\xfe bad", "not UTF-8"),
        (
            ["train", "--input", "nope.txt", "--vocab-size", "300", "--out", "t.json"],
            None,
            "nope.txt",
        ),
    ],
)
def test_bad_input_is_one_line_on_stderr(tmp_path, args, stdin, needle):
    result = run(*args, stdin=stdin, cwd=tmp_path)
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err


def test_bad_tokenizer_file_is_one_line(tmp_path):
    bad = tmp_path / "tok.json"
    bad.write_text('{"format": "buildlm-bpe", "version": 1')
    result = run("encode", "--tokenizer", str(bad), stdin=b"x")
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err and "tok.json" in err


@pytest.mark.parametrize("name", ["gpt2", "cl100k", "o200k"])
def test_block_encoding_equals_whole_text(pairs, shakespeare, name):
    from buildlm.tokenizer.cli import text_blocks

    _, tok, ref = next(p for p in pairs if p[0] == name)
    text = shakespeare[:300_000] + "\n".join(["tail  \nx", "é 🤗 \n\n  y", "z<|endoftext|>\nw"])
    blocks = text_blocks(text, 5_000)
    assert len(blocks) > 50 and "".join(blocks) == text
    ids = [i for block in blocks for i in tok.encode(block, allowed_special="all")]
    assert ids == ref.encode(text, allowed_special="all")


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--input", "the-verdict", "--vocab-size", "300", "--quiet"],
        ["encode", "--tokenizer", "gpt2"],
        ["decode", "--tokenizer", "gpt2"],
    ],
)
def test_out_in_a_missing_folder_is_refused_before_any_work(tmp_path, command):
    from buildlm.tokenizer.cli import main

    out = tmp_path / "typo" / "out.txt"
    with pytest.raises(FileNotFoundError, match=r"the folder .*typo' does not exist"):
        main([*command, "--out", str(out)])  # encode/decode would wait on stdin if it got there
    assert not (tmp_path / "typo").exists()
