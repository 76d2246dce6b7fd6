"""The tokenizer of a Hugging Face folder: tokenizer.json (byte-level BPE, or SentencePiece-style
with byte fallback) or GPT-2's vocab.json + merges.txt, each checked against Hugging Face
``tokenizers`` reading the same files."""

import json
import sys
import warnings
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from buildlm.data.corpora import load_corpus
from buildlm.hub import load_hf, load_hf_tokenizer, save_hf
from buildlm.tokenizer import SentencePieceBPE, Tokenizer

SAMPLES = [
    "I had always thought Jack Gisburn rather a cheap genius--though a good fellow enough.",
    "  spaces,\ttabs\n\nnewlines; numbers 12345 and 3.14, émigré café, 日本語, emoji 🙂!",
    "don't won't I'll we've they're <|endoftext|> after the special token",
]


@pytest.fixture(scope="module")
def hf_tokenizer() -> HFTokenizer:
    """A byte-level BPE trained with Hugging Face tokenizers (as GPT-2's was)."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([load_corpus("the-verdict")[:30000]], trainer=trainer)
    return tok


@pytest.fixture
def model_folder(hub, tmp_path):
    """A tiny GPT-2 folder with a vocabulary large enough for every tokenizer used here."""
    folder = tmp_path / "model"
    shape = hub.gpt2_shape(vocab_size=50257, n_embd=16, n_head=2, n_layer=1)
    hub.make_hf("gpt2", **shape).save_pretrained(folder)
    return folder


def _encode_like(ours: Tokenizer, theirs: HFTokenizer) -> None:
    for text in SAMPLES:
        expected = theirs.encode(text).ids
        assert ours.encode(text, allowed_special="all") == expected, text
        assert ours.decode(expected) == theirs.decode(expected, skip_special_tokens=False)


def test_tokenizer_json(model_folder, hf_tokenizer):
    hf_tokenizer.save(str(model_folder / "tokenizer.json"))
    model, tok = load_hf(model_folder)
    assert tok is not None and tok.vocab_size == hf_tokenizer.get_vocab_size()
    _encode_like(tok, hf_tokenizer)
    assert load_hf(model_folder, tokenizer=False)[1] is None


def test_vocab_json_and_merges_txt(model_folder, hf_tokenizer):
    """GPT-2's two files, under the names (and in the form) Hugging Face writes them."""
    hf_tokenizer.model.save(str(model_folder))  # vocab.json + merges.txt ("#version" header)
    assert (model_folder / "merges.txt").read_text().startswith("#version")
    tok = load_hf_tokenizer(model_folder)
    _encode_like(tok, hf_tokenizer)


def test_gpt2_files_from_the_bundled_vocabulary(model_folder, tmp_path):
    """The real GPT-2 vocabulary: written by tokenizers as vocab.json + merges.txt, read back."""
    gpt2 = Tokenizer.pretrained("gpt2")
    gpt2.save_hf(tmp_path / "gpt2.json")
    reference = HFTokenizer.from_file(str(tmp_path / "gpt2.json"))
    reference.model.save(str(model_folder))
    tok = load_hf_tokenizer(model_folder)
    assert tok.vocab_size == 50257 and tok.eot_token == 50256
    _encode_like(tok, reference)


def test_tokenizer_round_trips_through_save_hf(model_folder, hf_tokenizer, tmp_path):
    hf_tokenizer.save(str(model_folder / "tokenizer.json"))
    model, tok = load_hf(model_folder)
    save_hf(model, tok, tmp_path / "out")
    again = HFTokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    _encode_like(tok, again)
    _encode_like(load_hf_tokenizer(tmp_path / "out"), hf_tokenizer)


def test_tokenizer_larger_than_the_model_is_refused(hub, tmp_path, hf_tokenizer):
    hub.make_hf("gpt2", **hub.gpt2_shape(vocab_size=300)).save_pretrained(tmp_path)
    hf_tokenizer.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="tokenizer has 400 ids but the model only 300"):
        load_hf(tmp_path)


def test_unsupported_tokenizer_says_how_to_skip_it(model_folder):
    tok = HFTokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.save(str(model_folder / "tokenizer.json"))
    with pytest.raises(ValueError, match="not a BPE tokenizer.json.*pass tokenizer=False"):
        load_hf(model_folder)
    model, none = load_hf(model_folder, tokenizer=False)
    assert none is None and model.config.vocab_size == 50257


def test_added_tokens_and_what_buildlm_does_not_do(model_folder, hf_tokenizer, tmp_path):
    """Qwen-style extras: a non-special added token, an NFC normalizer, a BOS post-processor."""
    from tokenizers import normalizers, processors

    tok = HFTokenizer.from_str(hf_tokenizer.to_str())
    tok.add_tokens(["<think>"])  # not special, yet a token the model emits
    tok.add_special_tokens(["<|begin_of_text|>"])
    tok.normalizer = normalizers.NFC()
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 401)]
    )
    tok.save(str(model_folder / "tokenizer.json"))
    with pytest.warns(UserWarning) as caught:
        ours = load_hf_tokenizer(model_folder)
    messages = " | ".join(str(w.message) for w in caught)
    assert "normalizes text first (NFC)" in messages
    assert "adds ['<|begin_of_text|>'] to every encoded text" in messages
    text = "a <think>hmm</think> b"
    expected = tok.encode(text).ids
    assert expected[0] == 401 and 400 in expected
    assert ours.encode(text, allowed_special="all") == expected[1:]  # no BOS added
    assert ours.decode(expected) == tok.decode(expected, skip_special_tokens=False)


# --- SentencePiece-style tokenizers (Llama 2, Mistral, Gemma): byte-fallback BPE -------------


@pytest.fixture
def spm_folder(hub, tmp_path):
    """A tiny Llama folder with a Llama-2-style tokenizer.json (built by tokenizers) and a
    tokenizer_config.json naming its bos/eos, as a Hub folder has them."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import spm_files

    folder = tmp_path / "llama2"
    hub.make_hf("llama", **hub.llama_shape(vocab_size=1024)).save_pretrained(folder)
    spm_files.build("llama", folder / "tokenizer.json")
    config = {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_sentencepiece_tokenizer_loads_with_the_model(spm_folder):
    from buildlm.infer.load import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its normalizer is buildlm's too: no caveat to give
        model, tok = load_model(spm_folder)
    assert isinstance(tok, SentencePieceBPE) and (tok.bos, tok.eot_token) == ("<s>", 2)
    theirs = HFTokenizer.from_file(str(spm_folder / "tokenizer.json"))
    for text in SAMPLES:
        assert tok.encode(text, disallowed_special=()) == theirs.encode(text).ids
    assert tok.vocab_size <= model.config.vocab_size


def test_a_generated_reply_streams_as_it_decodes(spm_folder):
    """A reply "▁Hello▁world" reads "Hello world": the decoder's Strip on the first token."""
    from buildlm.infer.requests import SamplingParams
    from buildlm.infer.row import make_row

    model, tok = load_hf(spm_folder)
    reply = tok.encode("Hello émigré ☃ world", disallowed_special=())
    assert tok.token_bytes(reply[0]).startswith(b" ")
    row = make_row("[INST] Hi [/INST]", SamplingParams(max_new_tokens=50), model.config, tok)
    streamed = "".join(row.push(i) for i in [*reply, tok.eot_token])
    assert streamed == row.completion().text == tok.decode(reply) == "Hello émigré ☃ world"
    assert row.finish_reason == "stop"


def test_sentencepiece_tokenizer_round_trips_through_save_hf(spm_folder, tmp_path):
    from transformers import AutoTokenizer

    model, tok = load_hf(spm_folder)
    out = save_hf(model, tok, tmp_path / "out")
    original = json.loads((spm_folder / "tokenizer.json").read_text("utf-8"))
    assert json.loads((out / "tokenizer.json").read_text("utf-8")) == original
    config = json.loads((out / "tokenizer_config.json").read_text("utf-8"))
    assert (config["bos_token"], config["eos_token"]) == ("<s>", "</s>")
    assert json.loads((out / "config.json").read_text("utf-8"))["eos_token_id"] == 2
    theirs = AutoTokenizer.from_pretrained(out)
    for text in SAMPLES:
        ids = theirs.encode(text, add_special_tokens=False)
        assert load_hf_tokenizer(out).encode(text, disallowed_special=()) == ids


def test_sentencepiece_tokenizer_in_a_buildlm_checkpoint(spm_folder, tmp_path):
    from buildlm.checkpoint_format import load_checkpoint
    from buildlm.hub.convert import hf_to_checkpoint

    hf_to_checkpoint(spm_folder, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(loaded.tokenizer, SentencePieceBPE)
    text = SAMPLES[1]
    assert loaded.tokenizer.encode(text) == load_hf_tokenizer(spm_folder).encode(text)
