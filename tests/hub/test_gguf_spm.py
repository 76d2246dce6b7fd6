"""GGUF export and import of SentencePiece-style tokenizers (Llama 2, Mistral, Gemma): the
``tokenizer.ggml.model = "llama"`` fields llama.cpp reads (tokens, scores, token types, special
ids, ``add_space_prefix``), and the tokenizer read back from the file gives Hugging Face
``tokenizers``' ids for the original tokenizer.json, on edge strings and on Shakespeare.

The tokenizer.json files are built by ``tokenizers`` as transformers' converters lay them out
(``tests/spm_files.py``). `test_llamacpp_tokenizes_the_same` (skipped when llama.cpp's Python
binding is not installed) has llama.cpp itself tokenize the exported files.
"""

import heapq
import json
import random
import sys
from pathlib import Path

import gguf
import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer

from buildlm.checkpoint_format import load_checkpoint
from buildlm.cli import main as cli_main
from buildlm.data.corpora import load_corpus
from buildlm.hub import load_gguf, save_gguf
from buildlm.hub.gguf_spm import missing_splits, spm_tokenizer_fields
from buildlm.hub.gguf_tokenizer import tokenizer_from_fields
from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import SentencePieceBPE, Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import spm_files  # noqa: E402

# Layouts llama.cpp's SentencePiece tokenizer reproduces exactly (Metaspace ones: see below).
EXACT = [("llama", "runs"), ("llama", "words"), ("mistral_v3", "runs"), ("gemma", "runs"),
         ("gemma", "words")]  # fmt: skip
STRINGS = [
    "",
    " ",
    "Hello world",
    "I had always thought Jack Gisburn rather a cheap genius",
    "  leading spaces",
    "trailing spaces   ",
    "multiple   spaces  inside",
    "tabs\tand\nnew\n\nlines\r\n",
    "émigré café, naïve façade; Ærøskøbing",
    "日本語のテキスト 中文",
    "emoji 🙂🎉 and a rare ☃ snowman, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "a literal ▁ mark and ▁▁ two",
    "<s>Hi</s> there",
    "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "[INST] What is 2+2?[/INST] 4</s>[INST]again[/INST]",
    "x<s>y</s>z <unk> <0x41> <pad>",
]
SHAKESPEARE = load_corpus("shakespeare")[200_000:230_000]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(style, kind) -> (Hugging Face's tokenizer, the original, the .gguf file)``."""
    folder = tmp_path_factory.mktemp("gguf_spm")
    cache = {}

    def get(style: str, kind: str):
        if (style, kind) not in cache:
            path = spm_files.build(style, folder / f"{style}-{kind}.json", kind)
            ours = Tokenizer.load(path)
            torch.manual_seed(0)
            model = GPT(ModelConfig(
                vocab_size=ours.vocab_size + 2, context_length=16, d_model=16, n_layers=1,
                n_heads=2, position="rope", norm="rmsnorm", mlp="swiglu", bias=False,
            ))  # fmt: skip
            if style in ("llama_metaspace", "metaspace_split"):
                with pytest.warns(UserWarning, match="llama.cpp always does"):
                    out = save_gguf(model, ours, folder / f"{style}-{kind}.gguf")
            else:
                out = save_gguf(model, ours, folder / f"{style}-{kind}.gguf")
            cache[style, kind] = (HFTokenizer.from_file(str(path)), ours, out)
        return cache[style, kind]

    return get


def _hf_ids(hf: HFTokenizer, text: str) -> list[int]:
    return hf.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("style", ["llama", "gemma"])
def test_the_file_holds_what_llama_cpp_reads(exported, style):
    hf, ours, path = exported(style, "runs")
    meta = {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items() if f.types}
    assert meta["tokenizer.ggml.model"] == "llama"
    assert "tokenizer.ggml.merges" not in meta
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    scores = meta["tokenizer.ggml.scores"]
    vocab = hf.get_vocab(with_added_tokens=True)
    assert len(tokens) == len(types) == len(scores) == ours.vocab_size + 2
    assert all(tokens[i] == t for t, i in vocab.items())
    bos, eos, pad = ("<bos>", "<eos>", "<pad>") if style == "gemma" else ("<s>", "</s>", None)
    assert meta["tokenizer.ggml.bos_token_id"] == vocab[bos]
    assert meta["tokenizer.ggml.eos_token_id"] == vocab[eos]
    assert meta["tokenizer.ggml.unknown_token_id"] == vocab["<unk>"]
    assert meta.get("tokenizer.ggml.padding_token_id") == (vocab[pad] if pad else None)
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.ggml.add_space_prefix"] is (style != "gemma")
    assert types[vocab["<unk>"]] == 2
    assert types[vocab[bos]] == types[vocab[eos]] == 3
    assert [types[vocab[f"<0x{b:02X}>"]] for b in range(256)] == [6] * 256
    assert types[vocab["▁the"]] == types[vocab["e"]] == 1
    assert types[-2:] == [5, 5]  # the model's two padding rows
    # Here each token is made by one merge and scores minus its rank: highest score first.
    merges = ours.to_hf_json()["model"]["merges"]
    for rank in (0, 1, len(merges) // 2, len(merges) - 1):
        a, b = merges[rank].split(" ") if isinstance(merges[rank], str) else merges[rank]
        assert scores[vocab[a + b]] == -rank
    assert scores[vocab["e"]] == -len(merges)  # a character: below every merged token


@pytest.mark.parametrize("style, kind", EXACT)
def test_read_back_gives_hugging_faces_ids(exported, style, kind):
    hf, _, path = exported(style, kind)
    _, back = load_gguf(path)
    assert isinstance(back, SentencePieceBPE)
    assert missing_splits(back) == []  # rebuilt complete: llama.cpp's algorithm
    for text in [*STRINGS, SHAKESPEARE]:
        ids = _hf_ids(hf, text)
        assert back.encode(text, allowed_special="all") == ids, text[:40]
        assert back.decode(ids) == hf.decode(ids, skip_special_tokens=False), text[:40]


def test_metaspace_differs_only_where_llama_cpp_prepends_a_space(exported):
    """A ``Metaspace`` tokenizer puts no ``"▁"`` before text that starts with a space or
    follows a special token; llama.cpp does (SentencePiece's ``add_dummy_prefix``)."""
    hf, _, path = exported("llama_metaspace", "runs")
    _, back = load_gguf(path)
    assert back.encode(SHAKESPEARE) == _hf_ids(hf, SHAKESPEARE)
    assert back.encode("Hello world") == _hf_ids(hf, "Hello world")
    assert back.encode(" Hello") == _hf_ids(hf, "  Hello")  # llama.cpp's "▁▁Hello"


def test_cli_gguf_to_checkpoint_and_back(exported, tmp_path, capsys):
    hf, _, path = exported("gemma", "runs")
    cli_main(["convert", "--from", "gguf", str(path), "--out", str(tmp_path / "ckpt")])
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(loaded.tokenizer, SentencePieceBPE)
    assert loaded.tokenizer.encode(SHAKESPEARE) == _hf_ids(hf, SHAKESPEARE)
    again = tmp_path / "again.gguf"
    cli_main(["convert", "--to", "gguf", str(tmp_path / "ckpt"), "--out", str(again)])
    assert "wrote GGUF file" in capsys.readouterr().out
    fields = [{k: f.contents() for k, f in gguf.GGUFReader(p).fields.items()
               if k.startswith("tokenizer.")} for p in (path, again)]  # fmt: skip
    assert fields[0] == fields[1]


def test_what_llama_cpp_cannot_do_is_refused(tmp_path):
    split = spm_files.build("metaspace_split", tmp_path / "split.json", "runs")
    with pytest.raises(ValueError, match="cuts words at '▁' but has tokens across one"):
        spm_tokenizer_fields(Tokenizer.load(split), 2000)
    data = Tokenizer.load(spm_files.build("gemma", tmp_path / "g.json")).to_hf_json()
    data["normalizer"] = {"type": "NFKC"}
    with pytest.raises(ValueError, match="normalizer step 'NFKC' has no llama.cpp equivalent"):
        spm_tokenizer_fields(SentencePieceBPE(data), 2000)
    data["normalizer"] = {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
    data["pre_tokenizer"] = {"type": "Split", "pattern": {"String": "\n"}, "behavior": "Isolated"}
    with pytest.raises(ValueError, match="pre-tokenizer 'Split' has no llama.cpp equivalent"):
        spm_tokenizer_fields(SentencePieceBPE(data), 2000)
    with pytest.raises(ValueError, match="the model only 10 embeddings"):
        spm_tokenizer_fields(SentencePieceBPE(data), 10)
    with pytest.raises(ValueError, match="'bert' is not supported"):
        tokenizer_from_fields({"model": "bert", "tokens": []})


def test_llamacpp_tokenizes_the_same(exported):
    """llama.cpp itself (its Python binding) tokenizes the exported files as buildlm and
    Hugging Face do; skipped, saying why, when the binding is not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        pytest.skip(
            "llama.cpp's Python binding is not installed: pip install llama-cpp-python compiles "
            "it (RESULTS.md: GGUF)"
        )
    for style, kind in EXACT:
        hf, ours, path = exported(style, kind)
        llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        for text in [*STRINGS, SHAKESPEARE]:
            theirs = llm.tokenize(text.encode(), add_bos=False, special=True)
            assert theirs == ours.encode(text, allowed_special="all"), (style, kind, text[:40])
            assert theirs == _hf_ids(hf, text)
        del llm


def _spm_as_llama_cpp(fields: dict, text: str) -> list[int]:
    """llama.cpp's SentencePiece tokenizer (``llm_tokenizer_spm`` in src/llama-vocab.cpp) on
    text without special tokens, written from its description: characters, then the adjacent
    pair whose concatenation is the highest-scoring token (leftmost on a tie), again and again;
    a character that is no token becomes its byte tokens."""
    if not text:
        return []  # llama.cpp prepends no space to an empty text
    ids = {}
    for i, token in enumerate(fields["tokens"]):
        ids.setdefault(token, i)
    text = (" " + text if fields["add_space_prefix"] else text).replace(" ", "▁")
    symbols: list[str | None] = list(text)
    nxt, prev = list(range(1, len(text))) + [-1], list(range(-1, len(text) - 1))
    heap: list = []

    def push(left: int, right: int) -> None:
        if left >= 0 and right >= 0 and symbols[left] + symbols[right] in ids:
            joined = symbols[left] + symbols[right]
            heapq.heappush(heap, (-fields["scores"][ids[joined]], left, right, joined))

    for i in range(len(text) - 1):
        push(i, i + 1)
    while heap:
        _, left, right, joined = heapq.heappop(heap)
        if symbols[left] is None or symbols[right] is None or symbols[left] + symbols[right] != joined:
            continue  # stale: one side was merged since
        symbols[left], symbols[right] = joined, None
        nxt[left] = nxt[right]
        if nxt[left] >= 0:
            prev[nxt[left]] = left
        push(prev[left], left)
        push(left, nxt[left])
    out = []
    for piece in filter(None, symbols):
        out += [ids[piece]] if piece in ids else [ids[f"<0x{b:02X}>"] for b in piece.encode()]
    return out


@pytest.mark.parametrize("style", ["llama", "gemma"])
def test_read_back_tokenizes_as_llama_cpp_where_hugging_face_does_not(style, tmp_path):
    """Merges in a shuffled order: Hugging Face's BPE now applies pairs llama.cpp's
    score-ordered algorithm would not (and the other way round), so their ids part; the
    tokenizer read back from the file gives the ids of llama.cpp's algorithm."""
    path = spm_files.build(style, tmp_path / "t.json", "runs")
    data = json.loads(path.read_text(encoding="utf-8"))
    random.Random(0).shuffle(data["model"]["merges"])
    ours = SentencePieceBPE(data)
    fields = spm_tokenizer_fields(ours, ours.vocab_size)
    back = tokenizer_from_fields(fields)
    for text in [*STRINGS[:12], SHAKESPEARE]:
        assert back.encode(text) == _spm_as_llama_cpp(fields, text), text[:40]
    assert ours.encode(SHAKESPEARE) != back.encode(SHAKESPEARE)


def test_llamacpp_and_the_read_back_agree_where_hugging_face_does_not(tmp_path):
    """Merges in a shuffled order: Hugging Face's BPE now applies pairs llama.cpp's
    score-ordered algorithm would not (and the other way round), so their ids part; the
    tokenizer buildlm reads back from the file still gives llama.cpp's ids."""
    try:
        from llama_cpp import Llama
    except ImportError:
        pytest.skip("llama.cpp's Python binding is not installed: pip install llama-cpp-python")
    path = spm_files.build("llama", tmp_path / "t.json", "runs")
    data = json.loads(path.read_text(encoding="utf-8"))
    random.Random(0).shuffle(data["model"]["merges"])
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    ours = Tokenizer.load(path)
    model = GPT(ModelConfig(vocab_size=ours.vocab_size, context_length=16, d_model=16, n_layers=1,
                            n_heads=2, position="rope", norm="rmsnorm", mlp="swiglu"))  # fmt: skip
    _, back = load_gguf(save_gguf(model, ours, tmp_path / "t.gguf"))
    llm = Llama(model_path=str(tmp_path / "t.gguf"), vocab_only=True, verbose=False)
    theirs = llm.tokenize(SHAKESPEARE.encode(), add_bos=False, special=True)
    assert theirs != ours.encode(SHAKESPEARE)
    assert theirs == back.encode(SHAKESPEARE)
    fields = spm_tokenizer_fields(ours, ours.vocab_size)  # the tests' model of llama.cpp is right
    assert all(llm.tokenize(t.encode(), add_bos=False, special=False) == _spm_as_llama_cpp(fields, t)
               for t in [*STRINGS, SHAKESPEARE])  # fmt: skip
    del llm
