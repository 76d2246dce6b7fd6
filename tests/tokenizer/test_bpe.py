"""The Tokenizer class: construction, files, merges, specials, batches, long chunks, errors."""

from __future__ import annotations

import gzip
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildlm.tokenizer import Tokenizer, fast_encode
from buildlm.tokenizer.merge import merge_large, merge_small, merges_from_ranks

SAMPLE = "Hello world! It's 2024: naïve café 🤗 中文\r\n  done.  <|endoftext|> more"


def test_from_gpt2_plain_and_gz_equal_pretrained(gpt2_files, gpt2, tmp_path, ref_gpt2):
    encoder_json, vocab_bpe = gpt2_files
    plain = Tokenizer.from_gpt2(encoder_json, vocab_bpe)
    gz = tmp_path / "vocab.bpe.gz"
    gz.write_bytes(gzip.compress(vocab_bpe.read_bytes()))
    mixed = Tokenizer.from_gpt2(encoder_json, gz)
    for tok in (plain, mixed):
        assert tok.merges == gpt2.merges
        assert tok.special_tokens == gpt2.special_tokens == {"<|endoftext|>": 50256}
        assert tok.vocab_size == gpt2.vocab_size == 50257
        assert tok.encode(SAMPLE, allowed_special="all") == ref_gpt2.encode(
            SAMPLE, allowed_special="all"
        )


def test_gpt2_merges_are_vocab_bpe_and_derivable_from_ranks(gpt2, gpt2_files):
    _, vocab_bpe = gpt2_files
    lines = [line for line in vocab_bpe.read_text("utf-8").splitlines()[1:] if line]
    assert len(gpt2.merges) == len(lines) == 50000
    # the first merge of GPT-2 is "Ġ t" (space + t)
    assert gpt2.merges[0] == (b" ", b"t")
    # deriving merges from ranks alone (the tiktoken way) recovers vocab.bpe exactly
    ranks = {gpt2.token_bytes(i): i for i in range(50256)}
    assert merges_from_ranks(ranks) == gpt2.merges


def test_from_tiktoken_merges_rebuild_the_vocabulary(cl100k, ref_cl100k):
    merges = cl100k.merges
    assert len(merges) == 100256 - 256
    for i in [0, 1, 500, 50_000, len(merges) - 1]:
        left, right = merges[i]
        assert left + right == ref_cl100k.decode_single_token_bytes(256 + i)


def test_save_load_round_trip_gpt2(gpt2, tmp_path, shakespeare):
    path = tmp_path / "gpt2.json"
    gpt2.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.merges == gpt2.merges
    assert loaded.special_tokens == gpt2.special_tokens
    assert loaded.pattern == gpt2.pattern
    assert all(loaded.token_bytes(i) == gpt2.token_bytes(i) for i in range(gpt2.vocab_size))
    text = shakespeare[:200_000]
    assert loaded.encode(text) == gpt2.encode(text)
    # human readable: a format marker, and the first merge written as text
    content = path.read_text("utf-8")
    head = json.loads(content)
    assert (
        head["format"] == "buildlm-bpe" and head["version"] == 1 and head["pattern_name"] == "gpt2"
    )
    assert head["merges"][0] == [" ", "t"]
    # saving again gives the same bytes
    loaded.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()


def test_save_load_round_trip_non_utf8_and_backslash_tokens(tmp_path):
    merges = [
        (b"\\", b"x"),
        (b"\\x", b"4"),
        (b"\xe4", b"\xb8"),
        (b"\xe4\xb8", b"\xad"),
        (b" ", b"\\"),
    ]
    tok = Tokenizer.from_merges(merges, "cl100k", ("<|endoftext|>", "<|pad|>"))
    path = tmp_path / "tok.json"
    tok.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.merges == merges
    assert loaded.special_tokens == {"<|endoftext|>": 261, "<|pad|>": 262}
    text = "\\x41 中 \\"
    assert loaded.encode(text) == tok.encode(text)
    assert tok.encode("中") == [259]  # merge 3 (0-based) is id 256 + 3


def test_no_temp_files_left_after_save(gpt2, tmp_path):
    gpt2.save(tmp_path / "tok.json")
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]
    # same permissions as any file this process creates (not a private temp file's 0600)
    (tmp_path / "plain").write_text("x")
    assert (tmp_path / "tok.json").stat().st_mode == (tmp_path / "plain").stat().st_mode


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s[: len(s) // 2], "not valid JSON"),
        (lambda s: s.replace('"buildlm-bpe"', '"other"'), "not a buildlm tokenizer"),
        (lambda s: s.replace('"version": 1', '"version": 99'), "unsupported version"),
        (lambda s: s.replace('"merges"', '"mergez"'), "'merges'"),
        (lambda s: s.replace('[" ", "t"]', '[" ", "t", "x"]'), "expected two token strings"),
        (lambda s: s.replace('[" ", "t"]', '["\\\\q", "t"]'), "bad escape"),
        (lambda s: s.replace('[" ", "t"]', '["zz", "t"]'), "no earlier merge created"),
        (lambda s: s.replace('"!",', '"!!",', 1), "256 single bytes"),
        (
            lambda s: s.replace('"<|endoftext|>": 50256', '"<|endoftext|>": 5'),
            "already an ordinary token",
        ),
    ],
)
def test_corrupted_json_raises_value_error_naming_file(gpt2, tmp_path, mutate, message):
    good = tmp_path / "good.json"
    gpt2.save(good)
    bad = tmp_path / "bad.json"
    bad.write_text(mutate(good.read_text("utf-8")), "utf-8")
    with pytest.raises(ValueError, match=message) as info:
        Tokenizer.load(bad)
    assert "bad.json" in str(info.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        Tokenizer.load(tmp_path / "nope.json")


def test_decode_out_of_range_id_raises(gpt2):
    for bad in ([50257], [0, -1], [10**9], [1, "a"]):
        with pytest.raises(ValueError, match="not in the vocabulary"):
            gpt2.decode(bad)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        gpt2.token_bytes(50257)


def test_decode_accepts_numpy_and_generators(gpt2):
    import numpy as np

    ids = gpt2.encode("numpy ids decode too")
    assert gpt2.decode(np.array(ids, dtype=np.uint16)) == "numpy ids decode too"
    assert gpt2.decode(i for i in ids) == "numpy ids decode too"


def test_unknown_allowed_special_is_an_error(gpt2):
    with pytest.raises(ValueError, match="<\\|pad\\|>"):
        gpt2.encode("x", allowed_special={"<|pad|>"})


def test_encode_batch_parallel_equals_sequential(gpt2, shakespeare, monkeypatch):
    texts = [shakespeare[i : i + 20_000] for i in range(0, 400_000, 20_000)] + [
        "",
        "a <|endoftext|>",
    ]
    expected = [gpt2.encode(t, allowed_special="all") for t in texts]
    assert gpt2.encode_batch(texts, num_workers=1, allowed_special="all") == expected
    monkeypatch.setattr(fast_encode, "PARALLEL_MIN_CHARS", 0)  # force the process pool on a small batch
    assert gpt2.encode_batch(texts, num_workers=2, allowed_special="all") == expected
    with pytest.raises(ValueError, match="special token"):
        gpt2.encode_batch(texts, num_workers=2)


@settings(max_examples=200)
@given(
    st.binary(max_size=400)
    | st.text(alphabet="ab e\nthsnio", max_size=600).map(str.encode)  # many merges and ties
    | st.text(alphabet="🤗中é ", max_size=200).map(str.encode)
)
def test_heap_merge_equals_list_merge(ranks, piece):
    assert merge_large(piece, ranks["gpt2"]) == merge_small(piece, ranks["gpt2"])


def test_long_chunks_match_tiktoken(gpt2, ref_gpt2, cl100k, ref_cl100k):
    rng = random.Random(0)
    texts = [
        "a" * 200_000,
        " " * 50_000 + "x",
        "".join(rng.choice("ab") for _ in range(50_000)),
        rng.randbytes(100_000).decode("latin-1"),
        "7" * 20_000,
    ]
    for text in texts:
        assert gpt2.encode_ordinary(text) == ref_gpt2.encode_ordinary(text)
        assert cl100k.encode_ordinary(text) == ref_cl100k.encode_ordinary(text)


def test_pickle_round_trip(gpt2):
    import pickle

    clone = pickle.loads(pickle.dumps(gpt2))
    assert clone.encode(SAMPLE, allowed_special="all") == gpt2.encode(SAMPLE, allowed_special="all")


def test_constructor_validation():
    bytes_vocab = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ValueError, match="single-byte"):
        Tokenizer({i: bytes([i]) for i in range(255)})
    with pytest.raises(ValueError, match="already an ordinary"):
        Tokenizer(bytes_vocab, special_tokens={"<|x|>": 3})
    with pytest.raises(ValueError, match="neither a known name"):
        Tokenizer(bytes_vocab, pattern="(unclosed")
    with pytest.raises(ValueError, match="no earlier merge"):
        Tokenizer.from_merges([(b"ab", b"c")])
    with pytest.raises(ValueError, match="unknown pretrained"):
        Tokenizer.pretrained("llama")


def test_pure_byte_tokenizer_round_trips():
    tok = Tokenizer.from_merges([], special_tokens=())
    text = "bytes only: é 🤗"
    assert tok.encode(text) == list(text.encode("utf-8"))
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == 256


def test_duplicate_tokens_encode_to_the_first_id():
    # (b"a", b"bc") after (b"ab", b"c") makes b"abc" twice; ids stay 256 + merge index.
    merges = [(b"b", b"c"), (b"a", b"b"), (b"ab", b"c"), (b"a", b"bc")]
    tok = Tokenizer.from_merges(merges, special_tokens=())
    assert tok.vocab_size == 260
    assert tok.token_bytes(258) == tok.token_bytes(259) == b"abc"
    assert tok.encode("abc") == [258]
    assert tok.decode([259]) == "abc"


def test_train_builds_standard_layout(tmp_path):
    from buildlm.data.corpora import load_corpus

    training = pytest.importorskip(
        "buildlm.tokenizer.training", reason="training.py not written yet"
    )

    text = load_corpus("the-verdict")
    tok = Tokenizer.train(text, 400, special_tokens=("<|endoftext|>", "<|pad|>"), progress=False)
    merges = training.train_bpe(
        text, 400, special_tokens=("<|endoftext|>", "<|pad|>"), progress=False
    )
    assert tok.merges == merges
    assert tok.vocab_size == 400
    assert tok.special_tokens == {"<|endoftext|>": 398, "<|pad|>": 399}
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) < 0.6 * len(text.encode("utf-8"))  # 142 merges compress
    tok.save(tmp_path / "t.json")
    assert Tokenizer.load(tmp_path / "t.json").encode(text) == tok.encode(text)
