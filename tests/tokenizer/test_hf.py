"""Hugging Face tokenizer.json: read one written by ``tokenizers``, write one it reads."""

from __future__ import annotations

import json

import pytest

from buildlm.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")

TEXTS = [
    "Hello world! It's 2024: naïve café 🤗 中文\r\n  done.  ",
    "I'M SURE you'll see\n\n\n   spaces   and\ttabs 12345 3.14",
    "<|endoftext|>between<|endoftext|>",
]


@pytest.fixture(scope="module")
def hf_gpt2(gpt2_files, tmp_path_factory):
    """GPT-2 built by Hugging Face tokenizers from the original two files, saved as tokenizer.json."""
    from tokenizers import decoders, models, pre_tokenizers

    encoder_json, vocab_bpe = gpt2_files
    hf = tokenizers.Tokenizer(models.BPE.from_file(str(encoder_json), str(vocab_bpe)))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens(["<|endoftext|>"])
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    hf.save(str(path))
    return hf, path


def test_from_hf_equals_pretrained_and_hf(hf_gpt2, gpt2, shakespeare):
    hf, path = hf_gpt2
    tok = Tokenizer.from_hf(path)
    assert Tokenizer.load(path).merges == tok.merges == gpt2.merges
    assert tok.special_tokens == {"<|endoftext|>": 50256}
    assert all(tok.token_bytes(i) == gpt2.token_bytes(i) for i in range(50257))
    sample = shakespeare[:100_000]
    assert tok.encode(sample) == hf.encode(sample).ids
    for text in TEXTS:
        assert tok.encode(text, allowed_special="all") == hf.encode(text).ids


def test_save_hf_is_read_by_tokenizers(gpt2, tmp_path, shakespeare):
    path = tmp_path / "tokenizer.json"
    gpt2.save_hf(path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    sample = shakespeare[:100_000]
    assert hf.encode(sample).ids == gpt2.encode(sample)
    for text in TEXTS:
        ids = gpt2.encode(text, allowed_special="all")
        assert hf.encode(text).ids == ids
        assert hf.decode(ids, skip_special_tokens=False) == text
    assert Tokenizer.from_hf(path).merges == gpt2.merges


def test_save_hf_with_a_split_regex(gpt2, tmp_path):
    # GPT-2's merges under the cl100k pattern: tokenizer.json gets a Split step before ByteLevel
    byte_tokens = [gpt2.token_bytes(i) for i in range(256)]
    tok = Tokenizer.from_merges(gpt2.merges, "cl100k", ("<|endoftext|>",), byte_tokens=byte_tokens)
    path = tmp_path / "tokenizer.json"
    tok.save_hf(path)
    assert json.loads(path.read_text("utf-8"))["pre_tokenizer"]["type"] == "Sequence"
    hf = tokenizers.Tokenizer.from_file(str(path))
    for text in [*TEXTS, "digits 1234567 and 'LL and\r\n\r\nlines"]:
        assert hf.encode(text).ids == tok.encode(text, allowed_special="all")
    assert Tokenizer.from_hf(path).pattern == tok.pattern


def test_unsupported_tokenizer_json(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    with pytest.raises(ValueError, match="not a BPE tokenizer.json"):
        Tokenizer.from_hf(path)
    path.write_text(
        json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}}, "pre_tokenizer": None})
    )
    with pytest.raises(ValueError, match="ByteLevel"):
        Tokenizer.from_hf(path)


def test_cli_reads_hf_tokenizer_json(hf_gpt2, gpt2):
    import subprocess
    import sys

    _, path = hf_gpt2
    text = "The CLI reads tokenizer.json too."
    result = subprocess.run(
        [sys.executable, "-m", "buildlm", "tokenizer", "encode", "--tokenizer", str(path)],
        input=text.encode(),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert [int(x) for x in result.stdout.split()] == gpt2.encode(text)
