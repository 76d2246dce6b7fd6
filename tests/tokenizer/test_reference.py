"""buildlm's encoder against tiktoken: identical ids for GPT-2, cl100k_base and o200k_base."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildlm.tokenizer.patterns import PATTERNS, Splitter

EDGE_CASES = [
    "",
    " ",
    "Hello, world!",
    "I'm sure you'll say we've done it, they're ok, I'd go.",
    "I'M SURE YOU'LL SAY WE'VE DONE IT",
    "emoji 🤗🎉 and flags 🇫🇷 and family 👨‍👩‍👧‍👦",
    "中文分词测试，日本語のテキスト、한국어 텍스트",
    "combining: e\u0301 a\u0308 n\u0303 and Zalgo t\u0336\u0357e\u0335x\u0334t",
    "windows\r\nline\r\nendings\r\n",
    "trailing spaces   ",
    "trailing newlines\n\n\n",
    "mixed end \n \n\t  ",
    "   leading spaces",
    "digits 1 12 123 1234 12345 3.14159 1,000,000",
    "tabs\tand\x0bvertical\x0cform feeds",
    "file separators \x1c\x1d\x1e\x1f are not whitespace",
    "CamelCaseWords andHTTPServer XMLHttpRequest",
    "punctuation!!! ... ??? --- ((()))",
    "code: def f(x):\n    return x**2  # square\n",
    "\u00a0non-breaking\u2003em space\u3000ideographic",
    "a" * 3000,
    " " * 1000 + "x",
    "ab" * 700,
    "\n" * 500,
    "😀" * 300,
]


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_edge_cases_match_tiktoken(pairs, text):
    for name, tok, ref in pairs:
        assert tok.encode_ordinary(text) == ref.encode_ordinary(text), name
        assert tok.decode(tok.encode_ordinary(text)) == text, name


@pytest.mark.parametrize("name", ["gpt2", "cl100k", "o200k"])
def test_whole_shakespeare_matches_tiktoken(pairs, shakespeare, name):
    _, tok, ref = next(p for p in pairs if p[0] == name)
    ids = tok.encode_ordinary(shakespeare)
    assert ids == ref.encode_ordinary(shakespeare)
    assert tok.decode(ids) == shakespeare


@settings(max_examples=150)
@given(st.text())
def test_any_unicode_text_matches_tiktoken(pairs, text):
    for name, tok, ref in pairs:
        ids = tok.encode_ordinary(text)
        assert ids == ref.encode_ordinary(text), name
        assert tok.decode(ids) == text, name


# Pieces that exercise the patterns' branches: contractions, digit runs, whitespace runs, CRLF,
# and a sprinkle of non-ASCII so both the ASCII fast path and the general path are hit.
ASCII_HEAVY = st.lists(
    st.sampled_from(list("abcdeXYZ019 '\n\r\t.,!?-_") + ["'s", "'LL", "  ", "\r\n", "é", "😀"]),
    max_size=120,
).map("".join)


@settings(max_examples=150)
@given(ASCII_HEAVY)
def test_ascii_heavy_text_matches_tiktoken(pairs, text):
    for name, tok, ref in pairs:
        assert tok.encode_ordinary(text) == ref.encode_ordinary(text), name


@settings(max_examples=200)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=300))
def test_ascii_fast_path_equals_unicode_path(text):
    for pattern in PATTERNS.values():
        splitter = Splitter(pattern)
        assert splitter.findall(text) == list(splitter.findall_unicode(text))


def test_ascii_fast_path_on_shakespeare(shakespeare):
    sample = shakespeare[:300_000]
    for pattern in PATTERNS.values():
        splitter = Splitter(pattern)
        assert splitter.findall(sample) == list(splitter.findall_unicode(sample))


def test_lone_surrogates_are_replaced_like_tiktoken(pairs):
    text = "broken \ud83d utf-16 \udc00 pair"
    for name, tok, ref in pairs:
        assert tok.encode(text) == ref.encode(text), name


@pytest.mark.parametrize(
    "text",
    [
        "Hello<|endoftext|>world",
        "<|endoftext|>",
        "end <|endoftext|>",
        "a <|endoftext|> b <|endoftext|><|endoftext|>\n",
        "<|endofprompt|> mixed <|endoftext|>",
    ],
)
def test_special_tokens_match_tiktoken(pairs, text):
    for name, tok, ref in pairs:
        for allowed in ("all", {"<|endoftext|>"}):
            assert tok.encode(text, allowed_special=allowed, disallowed_special=()) == ref.encode(
                text, allowed_special=allowed, disallowed_special=()
            ), name
        assert tok.encode(text, disallowed_special=()) == ref.encode(text, disallowed_special=()), (
            name
        )
        with pytest.raises(ValueError):
            ref.encode(text)
        with pytest.raises(ValueError, match="allowed_special"):
            tok.encode(text)
        ids = tok.encode(text, allowed_special="all")
        assert tok.decode(ids) == text


def test_partially_allowed_specials_match_tiktoken(cl100k, ref_cl100k):
    text = "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|> pass<|endoftext|>"
    allowed = {"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"}
    # <|endoftext|> is neither allowed nor disallowed here: encoded as text
    assert cl100k.encode(text, allowed_special=allowed, disallowed_special=()) == ref_cl100k.encode(
        text, allowed_special=allowed, disallowed_special=()
    )
    # ... and by default it is disallowed, in both
    with pytest.raises(ValueError, match="endoftext"):
        cl100k.encode(text, allowed_special=allowed)
    with pytest.raises(ValueError):
        ref_cl100k.encode(text, allowed_special=allowed)


def test_decode_invalid_utf8_like_tiktoken(pairs):
    for name, tok, ref in pairs:
        ids = tok.encode_ordinary("héllo 🤗 wörld 中文")
        for cut in range(len(ids) + 1):
            for piece in (ids[:cut], ids[cut:], ids[1:cut]):
                assert tok.decode(piece) == ref.decode(piece), name
                assert tok.decode_bytes(piece) == ref.decode_bytes(piece), name


def test_vocab_size_and_token_bytes_match_tiktoken(pairs):
    for name, tok, ref in pairs:
        assert tok.vocab_size == ref.n_vocab, name
        for i in [0, 1, 100, 255, 256, 1000, ref.n_vocab // 2, ref.max_token_value]:
            assert tok.token_bytes(i) == ref.decode_single_token_bytes(i), name
        assert tok.eot_token == ref.eot_token, name
