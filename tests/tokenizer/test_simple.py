"""The teaching tokenizers: character-level and word-level."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buildlm.data.corpora import load_corpus
from buildlm.tokenizer import CharTokenizer, WordTokenizer


def test_char_tokenizer_round_trip_and_save(tmp_path):
    text = load_corpus("the-verdict")
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.encode("ab") == [tok.chars.index("a"), tok.chars.index("b")]
    tok.save(tmp_path / "c.json")
    loaded = CharTokenizer.load(tmp_path / "c.json")
    assert loaded.chars == tok.chars and loaded.encode(text[:500]) == ids[:500]


@given(st.text(min_size=1))
def test_char_tokenizer_any_text(text):
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text


def test_char_tokenizer_errors():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.decode([3])
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer.from_text("")


def test_word_tokenizer_like_the_book(tmp_path):
    text = load_corpus("the-verdict")
    tok = WordTokenizer.from_text(text)
    # the book: 1130 distinct words and punctuation marks, + <|endoftext|> and <|unk|>
    assert tok.vocab_size == 1132
    assert tok.vocab[-2:] == ["<|endoftext|>", "<|unk|>"]
    sample = '"It\'s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    # the book's printed result: quotes and apostrophes get spaces, the rest comes back as is
    assert (
        tok.decode(tok.encode(sample))
        == '" It\' s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    )
    # the book's example: "Hello" and "palace" are not in the story
    ids = tok.encode("Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace.")
    assert ids.count(tok.unk_id) == 2
    assert tok.eot_id in ids
    assert tok.decode(ids) == (
        "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."
    )
    tok.save(tmp_path / "w.json")
    assert WordTokenizer.load(tmp_path / "w.json").encode(sample) == tok.encode(sample)


def test_word_tokenizer_split():
    assert WordTokenizer.split("Hello, world. Is this-- a test?") == [
        "Hello",
        ",",
        "world",
        ".",
        "Is",
        "this",
        "--",
        "a",
        "test",
        "?",
    ]


def test_simple_load_rejects_other_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"format": "buildlm-char", "vocab": ["a"]}')
    with pytest.raises(ValueError, match="buildlm-word"):
        WordTokenizer.load(path)
    path.write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        CharTokenizer.load(path)
