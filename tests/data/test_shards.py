"""``prepare_shards``: streamed, parallel tokenization into memmap shards with a manifest."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildlm.data.corpora import corpus_documents
from buildlm.data.shards import (
    EOT,
    Source,
    _encode_piece,
    iter_documents,
    load_manifest,
    load_split,
    plan_pieces,
    prepare_shards,
    token_dtype,
)
from buildlm.tokenizer import Tokenizer


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """Where prepare must cut a (short) document: at or after (1 - f) of its bytes, the first line
    start with a printable character before its newline, else the first space between letters."""
    data = text.encode("utf-8")
    assert len(data) < 60_000  # one 64 KB window: a line cut anywhere in it beats a word cut
    target = round(len(data) * (1 - val_fraction))
    printable = range(0x21, 0x7F)
    for pos in range(max(target, 2), len(data)):
        if data[pos - 1] == 0x0A and data[pos - 2] in printable and data[pos] in printable:
            return data[:pos].decode(), data[pos:].decode()
    for pos in range(max(target, 1), len(data) - 1):
        if data[pos] == 0x20 and all(chr(c).isascii() and chr(c).isalpha() for c in data[pos - 1 : pos + 2 : 2]):
            return data[:pos].decode(), data[pos:].decode()
    return text, ""


def test_round_trip_and_manifest(tmp_path, small_tokenizer, verdict):
    out = tmp_path / "data"
    manifest = prepare_shards(["the-verdict"], small_tokenizer, out, val_fraction=0.1, block_bytes=2000, progress=False)
    train_text, val_text = split_text(verdict, 0.1)
    assert train_text + val_text == verdict and val_text
    train, val = load_split(out, "train"), load_split(out, "val")
    assert isinstance(train, np.memmap) and train.dtype == np.uint16
    assert small_tokenizer.decode(train.tolist()) == train_text + EOT
    assert small_tokenizer.decode(val.tolist()) == val_text + EOT
    # cutting into 2 kB blocks gives exactly the ids of encoding each part whole
    assert train.tolist() == small_tokenizer.encode_ordinary(train_text) + [small_tokenizer.eot_token]
    assert val.tolist() == small_tokenizer.encode_ordinary(val_text) + [small_tokenizer.eot_token]

    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest == load_manifest(out)
    assert manifest["dtype"] == "uint16" and manifest["vocab_size"] == small_tokenizer.vocab_size
    assert manifest["eot_id"] == small_tokenizer.eot_token
    assert manifest["splits"]["train"]["tokens"] == len(train)
    assert manifest["splits"]["val"]["bytes"] == len(val_text.encode())
    assert manifest["sources"] == [{"name": "the-verdict/the-verdict", "bytes": len(verdict.encode())}]
    assert Tokenizer.load(out / "tokenizer.json").encode(verdict[:500]) == small_tokenizer.encode(verdict[:500])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folder left


def test_files_are_documents_and_workers_agree(tmp_path, small_tokenizer):
    docs = corpus_documents("shakespeare")
    names = ["sonnets", "macbeth", "lovers_complaint"]
    paths = []
    for name in names:
        path = tmp_path / f"{name}.txt"
        path.write_text(docs[name], encoding="utf-8", newline="")
        paths.append(str(path))
    one = prepare_shards(paths, small_tokenizer, tmp_path / "one", num_workers=1, block_bytes=30_000, progress=False)
    two = prepare_shards(paths, small_tokenizer, tmp_path / "two", num_workers=2, block_bytes=30_000, progress=False)
    assert one["splits"] == two["splits"]
    for split in ("train", "val"):
        a, b = load_split(tmp_path / "one", split), load_split(tmp_path / "two", split)
        assert np.array_equal(a, b)
        pieces = list(iter_documents(a, small_tokenizer.eot_token))
        assert len(pieces) == len(names)
        for name, ids in zip(names, pieces, strict=True):
            text = small_tokenizer.decode(ids)
            whole = docs[name]
            assert (whole.startswith(text) if split == "train" else whole.endswith(text)) and text
    assert one["splits"]["train"]["documents"] == 3


def test_dtype_choice():
    assert token_dtype(300) == np.uint16
    assert token_dtype(50257) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535 fit
    assert token_dtype(65537) == np.uint32
    assert token_dtype(100277) == np.uint32


def test_gpt2_ids_and_directory_input(tmp_path):
    tok = Tokenizer.pretrained("gpt2")
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "b.txt").write_text("Second file.\nIt has two lines.\n")
    (folder / "a.txt").write_text("First file here.\nMore text follows.\nAnd more.\n")
    (folder / "c.txt").write_text("Third: 1,2,3.\n")
    (folder / "skip.md").write_text("not a txt file")
    manifest = prepare_shards([folder], "gpt2", tmp_path / "out", val_fraction=0.3, progress=False)
    assert [s["name"] for s in manifest["sources"]] == [str(folder / f"{c}.txt") for c in "abc"]
    assert manifest["dtype"] == "uint16" and manifest["eot_id"] == 50256
    train = load_split(tmp_path / "out", "train").tolist()
    expected = tok.encode("First file here.\nMore text follows.\n") + [50256]
    # no line start after 70% of the second file's bytes: it is cut before a space between words
    expected += tok.encode("Second file.\nIt has two") + [50256]
    # the third has neither after 70%: it stays whole in train
    expected += tok.encode("Third: 1,2,3.\n") + [50256]
    assert train == expected
    val = load_split(tmp_path / "out", "val").tolist()
    assert val == tok.encode("And more.\n") + [50256] + tok.encode(" lines.\n") + [50256]
    assert manifest["splits"]["val"]["documents"] == 2 and manifest["splits"]["train"]["documents"] == 3


SAMPLES = st.lists(
    st.sampled_from(["a", "bc", " ", "  ", "\n", "\n\n", "\t", "\r\n", "x.", "!\n", "é", "42", "'s", "日本", " \n"]),
    max_size=80,
).map("".join)


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k", "o200k"])
@settings(max_examples=60)
@given(text=SAMPLES, block=st.integers(1, 12), val_fraction=st.sampled_from([0.0, 0.2, 0.5]))
def test_block_cutting_never_changes_ids(pattern, text, block, val_fraction, verdict):
    tok = _pattern_tokenizers(verdict)[pattern]
    source = Source("mem", data=text.encode("utf-8"))
    pieces = plan_pieces([source], val_fraction, block)
    assert b"".join(text.encode()[p.start : p.end] for p in pieces) == text.encode()
    for split in ("train", "val"):
        parts = [p for p in pieces if p.split == split]
        if not parts:
            continue
        got = [i for p in parts for i in _encode_piece(p, tok)[0].tolist()]
        whole = text.encode()[parts[0].start : parts[-1].end].decode()
        assert got == tok.encode_ordinary(whole)


_TOKENIZERS: dict = {}


def _pattern_tokenizers(verdict):
    if not _TOKENIZERS:
        for pattern in ("gpt2", "cl100k", "o200k"):
            # whitespace runs repeated, so that tokens such as "\n\n" and " \n" exist: a cut that
            # splits a whitespace run then changes the ids (GPT-2 has "\n\n" as one token)
            extra = " é日本 42\r\n" + "a.\n\n\nb \n \nc\r\n\r\nd  e\t\n\n\nf x.\n" * 500
            _TOKENIZERS[pattern] = Tokenizer.train(verdict + extra, 320, pattern=pattern, progress=False)
    return _TOKENIZERS


def test_cuts_after_a_blank_line_keep_gpt2_ids():
    """Regression: a block once ended just after "\n\n", which GPT-2 then read as one "\n\n"
    token where the whole text has "\n", "\n"; and CRLF line ends are not safe either."""
    tok = Tokenizer.pretrained("gpt2")
    for text in ("I shall do good.\n\nEMILIA.\nI will.\n  Go.\n", "One line.\r\nTwo lines\r\nthree.\r\n"):
        data = text.encode()
        for block in range(1, len(data) + 1):
            pieces = plan_pieces([Source("mem", data=data)], 0.0, block)
            got = [i for p in pieces for i in _encode_piece(p, tok)[0].tolist()]
            assert got == tok.encode_ordinary(text), (text, block, [(p.start, p.end) for p in pieces])


def test_errors_name_the_problem(tmp_path, small_tokenizer):
    with pytest.raises(FileNotFoundError, match="no-such-file.txt"):
        prepare_shards([str(tmp_path / "no-such-file.txt")], small_tokenizer, tmp_path / "o", progress=False)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\nencore\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt is not UTF-8"):
        prepare_shards([str(bad)], small_tokenizer, tmp_path / "o", progress=False)
    one_line = tmp_path / "one.txt"
    one_line.write_text("a single line without a break")
    # a text with spaces between words is still too short to hold out 10%: say that, not "no space"
    with pytest.raises(ValueError, match=r"too short to hold out.*--val-fraction 0") as err:
        prepare_shards([str(one_line)], small_tokenizer, tmp_path / "o", progress=False)
    assert "no space" not in str(err.value) and "(29 bytes)" in str(err.value)
    with pytest.raises(ValueError, match="val_fraction"):
        prepare_shards(["the-verdict"], small_tokenizer, tmp_path / "o", val_fraction=1.5, progress=False)
    with pytest.raises(FileNotFoundError, match="not a prepared data folder"):
        load_manifest(tmp_path)
    assert not (tmp_path / "o").exists()


def test_truncated_shard_is_detected(tmp_path, small_tokenizer):
    out = tmp_path / "d"
    prepare_shards(["the-verdict"], small_tokenizer, out, progress=False)
    with open(out / "train.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="train.bin.*truncated"):
        load_split(out, "train")
