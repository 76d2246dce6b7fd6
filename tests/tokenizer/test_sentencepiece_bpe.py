"""SentencePiece-style BPE (Llama 2, Mistral, Gemma) against Hugging Face ``tokenizers``.

Every tokenizer.json here is built by ``tokenizers`` itself (``tests/spm_files.py``): a BPE it
trained, laid out and wrapped in each family's normalizer / pre-tokenizer / decoder. buildlm
reads the file with its own code, and must give the same ids and the same decoded text on every
string, stream the same text token by token, and agree with transformers'
``PreTrainedTokenizerFast`` too.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer

from buildlm.data.corpora import load_corpus
from buildlm.infer.detokenize import IncrementalDetokenizer
from buildlm.tokenizer import SentencePieceBPE, Tokenizer
from buildlm.tokenizer.pair_merge import merge_pairs_large, merge_pairs_small

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import spm_files  # noqa: E402

CASES = [(style, "runs") for style in spm_files.STYLES] + [("llama", "words"), ("gemma", "words")]
STRINGS = [
    "",
    " ",
    "Hello world",
    "I had always thought Jack Gisburn rather a cheap genius",
    "  leading spaces",
    "trailing spaces   ",
    "multiple   spaces  inside",
    "tabs\tand\nnew\n\nlines\r\n",
    "\n",
    "émigré café, naïve façade; Ærøskøbing",
    "日本語のテキスト 中文",
    "emoji 🙂🎉 and a rare ☃ snowman, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "a literal ▁ mark and ▁▁ two",
    "<s>Hi</s> there",
    "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "[INST] What is 2+2?[/INST] 4</s>[INST]again[/INST]",
    "x<s>y</s>z <unk> <0x41> <pad>",
    "</s>",
]
PIECES = [
    "the", " the", "ing", " of", "Jack", " ", "  ", "\n", "\t", "e", "t", "é", "日", "本", "🙂",
    "☃", "▁", ",", ".", "<s>", "</s>", "<bos>", "<eos>", "[INST]", "[/INST]", "<start_of_turn>",
    "<unk>", "<0x41>",
]  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``(style, kind) -> (buildlm's tokenizer, Hugging Face's, the file)``, built on demand."""
    folder = tmp_path_factory.mktemp("spm")
    cache = {}

    def get(style: str, kind: str = "runs"):
        if (style, kind) not in cache:
            path = spm_files.build(style, folder / f"{style}-{kind}.json", kind)
            cache[style, kind] = (Tokenizer.load(path), HFTokenizer.from_file(str(path)), path)
        return cache[style, kind]

    return get


def check(ours: SentencePieceBPE, theirs: HFTokenizer, text: str) -> None:
    """Same ids (special tokens matched, and as text), same decoded text, same stream."""
    expected = theirs.encode(text, add_special_tokens=False).ids
    assert ours.encode(text, allowed_special="all") == expected, text
    decoded = theirs.decode(expected, skip_special_tokens=False)
    assert ours.decode(expected) == decoded, text
    detok = IncrementalDetokenizer(ours.token_bytes, first_token_bytes=ours.first_token_bytes)
    assert "".join(detok.push(i) for i in expected) + detok.flush() == decoded, text
    theirs.encode_special_tokens = True  # special-token text as ordinary text
    try:
        as_text = theirs.encode(text, add_special_tokens=False).ids
    finally:
        theirs.encode_special_tokens = False
    assert ours.encode(text, disallowed_special=()) == as_text, text
    assert ours.encode_ordinary(text) == as_text, text


@pytest.mark.parametrize(("style", "kind"), CASES)
def test_same_ids_and_text_as_hugging_face(built, style, kind):
    ours, theirs, _ = built(style, kind)
    assert isinstance(ours, SentencePieceBPE)
    assert ours.vocab_size == theirs.get_vocab_size()
    for text in STRINGS:
        check(ours, theirs, text)


@pytest.mark.parametrize(("style", "kind"), CASES)
def test_random_text_as_hugging_face(built, style, kind):
    ours, theirs, _ = built(style, kind)

    @settings(max_examples=60, derandomize=True, deadline=None)
    @given(st.lists(st.sampled_from(PIECES), max_size=25).map("".join))
    def run(text):
        check(ours, theirs, text)

    run()


@pytest.mark.parametrize("style", ["llama", "gemma", "llama_metaspace"])
def test_a_long_real_text_as_hugging_face(built, style):
    """60 KB of Shakespeare: words cut and cached, paragraphs merged whole where they must be."""
    ours, theirs, _ = built(style)
    text = load_corpus("shakespeare")[200_000:260_000]
    assert ours.encode(text) == theirs.encode(text, add_special_tokens=False).ids
    assert ours.encode("\n".join([text[:5000]] * 3)) == ours.encode("\n".join([text[:5000]] * 3))


@pytest.mark.parametrize("style", spm_files.STYLES)
def test_transformers_agrees(built, style):
    from transformers import PreTrainedTokenizerFast

    ours, _, path = built(style)
    fast = PreTrainedTokenizerFast(tokenizer_file=str(path), clean_up_tokenization_spaces=False)
    for text in STRINGS:
        ids = fast.encode(text, add_special_tokens=False)
        assert ours.encode(text, allowed_special="all") == ids, text
        assert ours.decode(ids) == fast.decode(ids), text


@pytest.mark.parametrize("style", spm_files.STYLES)
def test_text_after_a_special_token(built, style):
    """``encode_continuation`` is the text after a special token: with Metaspace's "first"
    scheme it gets no leading "▁"; with a Prepend normalizer it does, as in Hugging Face."""
    ours, theirs, _ = built(style)
    for text in ["Hi", " Hi", "\nHi there", "Hi  "]:
        expected = theirs.encode(ours.eos + text, add_special_tokens=False).ids[1:]
        assert ours.encode_continuation(text) == expected, text


def test_byte_fallback_and_the_first_token(built):
    ours, _, _ = built("llama")
    ids = ours.encode("☃")  # a character the vocabulary lacks: "▁" and its three UTF-8 bytes
    assert [ours.token_bytes(i) for i in ids] == [b" ", b"\xe2", b"\x98", b"\x83"]
    assert ours.first_token_bytes(ids[0]) == b"" and ours.decode(ids) == "☃"
    assert ours.decode_bytes(ids) == "☃".encode()
    assert ours.decode(ids[1:3]) == "\ufffd\ufffd"  # an incomplete run: one U+FFFD per token


def test_special_tokens_and_their_rules(built):
    ours, _, _ = built("gemma")
    assert (ours.bos, ours.eos, ours.eot_token) == ("<bos>", "<eos>", 1)
    assert ours.special_tokens["<start_of_turn>"] == ours.vocab_size - 2
    with pytest.raises(ValueError, match="contains the special token '<eos>'"):
        ours.encode("a<eos>")
    assert ours.encode("a<eos>", allowed_special={"<eos>"})[-1] == 1
    with pytest.raises(ValueError, match="not a special token"):
        ours.encode("a", allowed_special={"<s>"})
    llama, _, _ = built("llama")
    assert (llama.bos, llama.eos, llama.eot_token) == ("<s>", "</s>", 2)
    with pytest.raises(ValueError, match="token id 99999 is not in the vocabulary"):
        llama.decode([5, 99999])


def test_added_tokens_normalized_stripped_and_ordinary(built, tmp_path):
    """Added tokens with every option buildlm supports: matched in the normalized text
    (``normalized``), swallowing spaces (``lstrip``/``rstrip``), ordinary ones always."""
    _, theirs, _ = built("llama")
    theirs = HFTokenizer.from_str(theirs.to_str())
    theirs.add_special_tokens([AddedToken("<tool>", lstrip=True, rstrip=True, normalized=False),
                               AddedToken("<mask>", normalized=True)])  # fmt: skip
    theirs.add_tokens([AddedToken("<html>", normalized=False), AddedToken("zyx", normalized=True)])
    theirs.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer.load(tmp_path / "tokenizer.json")
    for text in ["a  <tool>  b", "<tool>x", "x <mask> y<mask>", "<mask>", "<html>zyx zyx<html>",
                 "a zyx<s>zyx", "x<tool>\n<tool> y", " <html> "]:  # fmt: skip
        check(ours, theirs, text)
    assert "<html>" not in ours.special_tokens and "<tool>" in ours.special_tokens


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.data())
def test_heap_merge_equals_the_plain_merge(data):
    pieces, merges = spm_files.learned("runs")
    vocab = {t: i for i, t in enumerate(pieces)}
    table = {(vocab[a], vocab[b]): (r, vocab[a + b]) for r, (a, b) in enumerate(merges)}
    alphabet = [vocab[t] for t in pieces if len(t) == 1] + [vocab[t] for t in pieces[-40:]]
    ids = data.draw(st.lists(st.sampled_from(alphabet), max_size=150))
    assert merge_pairs_large(ids, table) == merge_pairs_small(ids, table)


def test_save_hf_writes_the_file_back(built, tmp_path):
    for style in ("llama", "gemma"):
        ours, theirs, path = built(style)
        out = tmp_path / f"{style}.json"
        ours.save_hf(out)
        assert json.loads(out.read_text("utf-8")) == json.loads(path.read_text("utf-8"))
        again = HFTokenizer.from_file(str(out))
        text = STRINGS[11] + STRINGS[14]
        assert again.encode(text).ids == theirs.encode(text).ids
        ids = ours.encode(text, allowed_special="all")
        assert pickle.loads(pickle.dumps(ours)).encode(text, allowed_special="all") == ids
        assert ours.encode_batch([text, "b"], allowed_special="all") == [ids, ours.encode("b")]


def _edited(path: Path, tmp_path: Path, edit) -> Path:
    data = json.loads(path.read_text("utf-8"))
    edit(data)
    out = tmp_path / "tokenizer.json"
    out.write_text(json.dumps(data), "utf-8")
    return out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(normalizer={"type": "Lowercase"}), "unsupported normalizer 'Lowercase'"),
        (lambda d: d.update(pre_tokenizer={"type": "ByteLevel"}), "unsupported pre-tokenizer 'ByteLevel'"),
        (lambda d: d["decoder"]["decoders"][-1].update(stop=1), "unsupported decoder step 'Strip'"),
        (lambda d: d.update(decoder=None), "needs a decoder"),
        (lambda d: d["normalizer"]["normalizers"][1].update(pattern={"Regex": " +"}), "only fixed strings"),
        (lambda d: d["added_tokens"][1].update(single_word=True), "single_word=true"),
        (lambda d: d["model"]["merges"].insert(0, ["▁", "nope"]), "merge 0"),
        (lambda d: d["model"].update(dropout=0.1), "dropout=0.1"),
        (lambda d: d["model"].update(continuing_subword_prefix="##"), "continuing_subword_prefix"),
        (lambda d: d["model"].update(unk_token="<missing>"), "unk_token '<missing>'"),
    ],
)  # fmt: skip
def test_unsupported_files_are_one_line_errors(built, tmp_path, edit, message):
    _, _, path = built("llama")
    bad = _edited(path, tmp_path, edit)
    with pytest.raises(ValueError, match=message) as err:
        Tokenizer.load(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_the_tokenizer_command_reads_it(built):
    import subprocess

    ours, theirs, path = built("gemma")
    text = STRINGS[11] + " and <eos> as text"
    result = subprocess.run(
        [sys.executable, "-m", "buildlm", "tokenizer", "encode", "--tokenizer", str(path),
         "--special-as-text"],
        input=text.encode(), capture_output=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert [int(x) for x in result.stdout.split()] == ours.encode_ordinary(text)


@pytest.mark.parametrize("fuse_unk", [True, False])
def test_unknown_characters_without_byte_fallback(built, tmp_path, fuse_unk):
    """Without byte fallback a character the vocabulary lacks is <unk> (runs of them one <unk>
    with ``fuse_unk``); the merges written as "a b" strings read the same as [a, b] lists."""
    _, _, path = built("metaspace_split")

    def edit(d):
        d["model"].update(byte_fallback=False, fuse_unk=fuse_unk)
        d["model"]["merges"] = [" ".join(m) for m in d["model"]["merges"]]

    out = _edited(path, tmp_path, edit)
    ours, theirs = Tokenizer.load(out), HFTokenizer.from_file(str(out))
    for text in ["☃☃ snow 🙂x🙂 日本語", *STRINGS]:
        check(ours, theirs, text)
    assert ours.encode("☃☃").count(0) == (1 if fuse_unk else 2)
    ours.save_hf(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text("utf-8")) == json.loads(out.read_text())
