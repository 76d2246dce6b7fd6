"""File formats: GPT-2's byte map, the lossless byte escape, tiktoken rank files."""

from __future__ import annotations

import base64
import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buildlm.tokenizer import Tokenizer
from buildlm.tokenizer.buildlm_json import escape_bytes, unescape_bytes
from buildlm.tokenizer.openai_files import gpt2_bytes_to_unicode, read_tiktoken


def test_gpt2_byte_map_matches_transformers():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    assert gpt2_bytes_to_unicode() == bytes_to_unicode()
    assert gpt2_bytes_to_unicode()[ord(" ")] == "Ġ"


@given(st.binary(max_size=64))
def test_escape_round_trips_any_bytes(token):
    assert unescape_bytes(escape_bytes(token)) == token


def test_escape_is_readable():
    assert escape_bytes(b" the") == " the"
    assert escape_bytes("中".encode()) == "中"
    assert escape_bytes(b"\xe4\xb8") == "\\xe4\\xb8"
    assert escape_bytes(b"a\\xb") == "a\\\\xb"
    with pytest.raises(ValueError, match="bad escape"):
        unescape_bytes("\\q")


def test_tiktoken_file_plain_and_gz_agree(tmp_path, cl100k, ref_cl100k):
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    lines += [f"{base64.b64encode(b'ab').decode()} 256", f"{base64.b64encode(b'abc').decode()} 257"]
    plain = tmp_path / "mini.tiktoken"
    plain.write_text("\n".join(lines) + "\n")
    gz = tmp_path / "mini.tiktoken.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_tiktoken(plain) == read_tiktoken(gz)
    tok = Tokenizer.from_tiktoken(gz, "gpt2", {"<|endoftext|>": 258})
    assert tok.encode("abcab") == [257, 256]
    assert tok.merges == [(b"a", b"b"), (b"ab", b"c")]


@pytest.mark.parametrize(
    "content, message",
    [
        ("!!notbase64 0\n", "expected 'base64token rank'"),
        ("YQ== zero\n", "expected 'base64token rank'"),
        ("YQ== 0\nYg== 0\n", "appears twice"),
        ("", "no tokens"),
    ],
)
def test_bad_tiktoken_files(tmp_path, content, message):
    path = tmp_path / "bad.tiktoken"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_tiktoken(path)


def test_bad_gzip_and_non_utf8(tmp_path):
    gz = tmp_path / "x.tiktoken.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="gzip"):
        read_tiktoken(gz)
    raw = tmp_path / "x.json"
    raw.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match="UTF-8"):
        Tokenizer.load(raw)


def test_gpt2_files_inconsistent(gpt2_files, tmp_path):
    encoder_json, vocab_bpe = gpt2_files
    bad = tmp_path / "vocab.bpe"
    bad.write_text(vocab_bpe.read_text("utf-8") + "Ġzzzz qqqq\n", "utf-8")
    with pytest.raises(ValueError, match="missing"):
        Tokenizer.from_gpt2(encoder_json, bad)
