"""BPE training (``train_bpe``) against Hugging Face ``tokenizers``' ``BpeTrainer``.

The reference is configured as a byte-level BPE with the same pre-tokenization regex, so the two
must learn the same merges in the same order. HF writes its tokens in GPT-2's byte-to-unicode
alphabet; :func:`hf_merges` maps them back to bytes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from buildlm.data.corpora import corpus_documents, load_corpus
from buildlm.tokenizer.patterns import PATTERNS, Splitter
from buildlm.tokenizer.train_chunks import count_chunks
from buildlm.tokenizer.train_merges import hf_byte_order
from buildlm.tokenizer.training import train_bpe

EOT = "<|endoftext|>"


def gpt2_unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: printable bytes stand for themselves, the other 68
    bytes for the code points 256, 257, ... in byte order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {chr(b): b for b in printable}
    others = [b for b in range(256) if b not in set(printable)]
    table.update({chr(256 + k): b for k, b in enumerate(others)})
    return table


U2B = gpt2_unicode_to_byte()


def hf_merges(texts, vocab_size: int, pattern: str = "gpt2", specials=(EOT,)):
    """Train HF's BpeTrainer with a byte-level pre-tokenizer using ``pattern``; merges as bytes."""
    tok = Tokenizer(models.BPE())
    if pattern == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(PATTERNS.get(pattern, pattern)), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([texts] if isinstance(texts, str) else list(texts), trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    pairs = [m if isinstance(m, list) else m.split(" ") for m in merges]
    return [(bytes(U2B[c] for c in left), bytes(U2B[c] for c in right)) for left, right in pairs]


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return load_corpus("shakespeare")


# --- Equality with Hugging Face on a real corpus --------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "vocab_size"), [("gpt2", 4096), ("gpt2", 8192), ("cl100k", 4096)]
)
def test_shakespeare_merges_match_hf(shakespeare, pattern, vocab_size):
    ours = train_bpe(shakespeare, vocab_size, pattern=pattern, progress=False)
    theirs = hf_merges(shakespeare, vocab_size, pattern)
    assert len(ours) == vocab_size - 257
    assert ours == theirs


def test_o200k_matches_hf():
    text = load_corpus("the-verdict")
    assert train_bpe(text, 1200, pattern="o200k", progress=False) == hf_merges(text, 1200, "o200k")


def test_documents_match_hf():
    docs = list(corpus_documents("shakespeare").values())[:6]
    assert train_bpe(docs, 2000, progress=False) == hf_merges(docs, 2000)


# --- Small cases a learner can check by hand ------------------------------------------------


def test_overlapping_pairs_merge_left_to_right():
    # "aaaa": (a,a) occurs 3 times -> "aa aa" (left to right); then (aa,aa) -> "aaaa".
    merges = train_bpe("aaaa", 259, special_tokens=(EOT,), progress=False)
    assert merges == [(b"a", b"a"), (b"aa", b"aa")]
    assert merges == hf_merges("aaaa", 259)
    # "aaa": "aa a", then (aa, a).
    assert train_bpe("aaa", 300, special_tokens=(), progress=False) == [(b"a", b"a"), (b"aa", b"a")]


def test_ties_follow_hf_byte_order():
    # Chunks "ab" and " cd": (a,b), (c,d) and (" ",c) all occur once. HF numbers printable bytes
    # before the space byte, so (a,b) < (c,d) < (" ",c), then (" ", cd).
    expected = [(b"a", b"b"), (b"c", b"d"), (b" ", b"cd")]
    assert train_bpe("ab cd", 300, progress=False) == expected
    assert hf_merges("ab cd", 300) == expected


def test_hf_byte_order_is_the_byte_level_alphabet_sorted():
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    assert hf_byte_order() == [U2B[c] for c in alphabet]


def test_runs_out_of_pairs():
    # "ab ab": chunks "ab", " ab"; merges (a,b) then (" ", ab); nothing is left to merge after.
    assert train_bpe("ab ab", 1000, progress=False) == [(b"a", b"b"), (b" ", b"ab")]
    assert hf_merges("ab ab", 1000) == [(b"a", b"b"), (b" ", b"ab")]


TEXT = st.text(alphabet=st.sampled_from(list("aabbc  \n\t.,'s1é中😀")), min_size=1, max_size=120)


@settings(max_examples=40)
@given(texts=st.lists(TEXT, min_size=1, max_size=4), extra=st.integers(0, 60))
def test_random_corpora_match_hf_gpt2(texts, extra):
    assert train_bpe(texts, 257 + extra, progress=False) == hf_merges(texts, 257 + extra)


@settings(max_examples=25)
@given(texts=st.lists(TEXT, min_size=1, max_size=4), extra=st.integers(0, 60))
def test_random_corpora_match_hf_cl100k(texts, extra):
    ours = train_bpe(texts, 257 + extra, pattern="cl100k", progress=False)
    assert ours == hf_merges(texts, 257 + extra, "cl100k")


# --- Streaming: blocks must not change the chunks ---------------------------------------------


def whole_text_counts(text: str, pattern: str) -> Counter:
    return Counter(Splitter(pattern).findall(text))


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k", "o200k"])
@pytest.mark.parametrize("block_chars", [1, 7, 1000])
def test_blocks_give_the_same_chunks(pattern, block_chars):
    # The tail holds the hard cases: whitespace runs, CRLF, and o200k's "'\n/" where a slash
    # after a newline joins the punctuation chunk before it.
    tail = "x  \n\r\n  y.\n\nz 12345 !!\nit'\n/a b-\n/x\n"
    text = load_corpus("the-verdict")[:8000] + tail
    counts = count_chunks(text, Splitter(pattern), block_chars=block_chars)
    assert counts == whole_text_counts(text, pattern)


BLOCK_TEXT = st.text(
    alphabet=st.sampled_from(list("ab Z9  \n\n\r\t.'!-/_é中\x85\xa0")), min_size=0, max_size=200
)


@settings(max_examples=60)
@given(text=BLOCK_TEXT, block_chars=st.integers(1, 40), pattern=st.sampled_from(list(PATTERNS)))
def test_blocks_give_the_same_chunks_random(text, block_chars, pattern):
    counts = count_chunks(text, Splitter(pattern), block_chars=block_chars)
    assert counts == whole_text_counts(text, pattern)


def test_file_equals_string(tmp_path, shakespeare):
    text = shakespeare[:300_000] + "caf\u00e9 na\u00efve \u4e2d\u6587\r\nend"
    path = tmp_path / "corpus.txt"
    path.write_bytes(text.encode("utf-8"))
    assert train_bpe(path, 1000, progress=False) == train_bpe(text, 1000, progress=False)


def test_small_file_reads_split_multibyte_characters(tmp_path):
    text = "h\u00e9llo w\u00f6rld \u4e2d\u6587\u5b57 \U0001f600\U0001f600 ok\n" * 20
    path = tmp_path / "utf8.txt"
    path.write_bytes(text.encode("utf-8"))
    for size in (1, 2, 3, 5):
        assert count_chunks(path, Splitter("gpt2"), block_chars=size) == whole_text_counts(
            text, "gpt2"
        )


def test_iterables_and_generators(shakespeare):
    docs = [shakespeare[:50_000], shakespeare[50_000:90_000]]
    from_list = train_bpe(docs, 600, progress=False)
    assert from_list == train_bpe(iter(docs), 600, progress=False)
    assert from_list == train_bpe((d for d in docs), 600, progress=False)
    assert from_list == hf_merges(docs, 600)


def test_special_tokens_cut_the_text(shakespeare):
    docs = [shakespeare[:30_000], shakespeare[30_000:60_000], shakespeare[60_000:61_000]]
    joined = EOT.join(docs) + EOT
    ours = train_bpe(joined, 700, progress=False)
    assert ours == train_bpe(docs, 700, progress=False)
    assert ours == hf_merges(docs, 700)
    assert not any(b"|>" in left + right for left, right in ours)


def test_special_token_with_spaces_is_never_cut(tmp_path):
    special = "<sep> here"  # holds a space: a block must not end inside it
    text = "alpha beta<sep> here gamma delta\n" * 50
    counts = count_chunks(text, Splitter("gpt2"), (special,), block_chars=3)
    pieces = text.split(special)
    expected = sum((whole_text_counts(p, "gpt2") for p in pieces), Counter())
    assert counts == expected


# --- Errors a user can make ---------------------------------------------------------------------


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="minimum is 257"):
        train_bpe("hello", 256, progress=False)
    with pytest.raises(ValueError, match="minimum is 258"):
        train_bpe("hello", 257, special_tokens=("<a>", "<b>"), progress=False)
    assert train_bpe("hello", 257, progress=False) == []  # exactly the minimum: no merges


@pytest.mark.parametrize("texts", ["", [], ["", ""], EOT, iter([])])
def test_empty_corpus(texts):
    with pytest.raises(ValueError, match="empty"):
        train_bpe(texts, 300, progress=False)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        train_bpe(missing, 300, progress=False)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        train_bpe(["some text", missing], 300, progress=False)


def test_directory_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError, match="directory"):
        train_bpe(tmp_path, 300, progress=False)


def test_non_utf8_file_names_file_and_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("na\u00efve caf\u00e9".encode("latin-1"))  # 0xef at offset 2
    with pytest.raises(ValueError, match=r"latin1\.txt.*0xef at byte offset 2.*UTF-8"):
        train_bpe(path, 300, progress=False)
    # The offset counts from the start of the file, across reads.
    path.write_bytes(b"x" * 100 + "\u00e9".encode() + b"\xff tail")  # bad byte at 102
    with pytest.raises(ValueError, match="byte offset 102"):
        count_chunks(path, Splitter("gpt2"), block_chars=8)
    path.write_bytes(b"ends mid-character \xe4\xb8")  # truncated 3-byte sequence at 19
    with pytest.raises(ValueError, match="byte offset 19"):
        train_bpe(path, 300, progress=False)


def test_wrong_input_types():
    with pytest.raises(TypeError, match="bytes"):
        train_bpe(b"hello", 300, progress=False)
    with pytest.raises(TypeError, match="#1 is a int"):
        train_bpe(["hello", 5], 300, progress=False)
    with pytest.raises(TypeError, match="iterable"):
        train_bpe(42, 300, progress=False)


def test_bad_options():
    with pytest.raises(ValueError, match="duplicate special"):
        train_bpe("hello", 300, special_tokens=("<a>", "<a>"), progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        train_bpe("hello", 300, special_tokens=("",), progress=False)
    with pytest.raises(ValueError, match="integer"):
        train_bpe("hello", 300.0, progress=False)
    with pytest.raises(ValueError, match="valid regex"):
        train_bpe("hello", 300, pattern="(unclosed", progress=False)


def test_progress_bars_do_not_change_the_result(capsys):
    text = load_corpus("the-verdict")
    assert train_bpe(text, 400, progress=True) == train_bpe(text, 400, progress=False)
    assert "merging" in capsys.readouterr().err


def test_special_token_given_as_one_string():
    assert train_bpe("ab ab", 258, special_tokens="<s>", progress=False) == [(b"a", b"b")]


def test_path_objects_are_files_and_strings_are_text(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("zzzz zzzz", encoding="utf-8")
    from_file = train_bpe(path, 300, progress=False)
    assert from_file == train_bpe("zzzz zzzz", 300, progress=False)
    # The same path as a str is text: its characters are what gets trained on.
    assert train_bpe(str(path), 300, progress=False) != from_file


def test_dedicated_path_type_other_than_pathlib(tmp_path):
    class MyPath:
        def __init__(self, p: Path) -> None:
            self.p = p

        def __fspath__(self) -> str:
            return str(self.p)

    path = tmp_path / "doc.txt"
    path.write_text("abab abab", encoding="utf-8")
    assert train_bpe(MyPath(path), 300, progress=False) == train_bpe(
        "abab abab", 300, progress=False
    )


def test_mixed_files_and_strings(tmp_path, shakespeare):
    first, second = shakespeare[:20_000], shakespeare[20_000:40_000]
    path = tmp_path / "first.txt"
    path.write_text(first, encoding="utf-8")
    assert train_bpe([path, second], 500, progress=False) == train_bpe(
        [first, second], 500, progress=False
    )
