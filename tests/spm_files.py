"""SentencePiece-style tokenizer.json files for the tests, built by Hugging Face ``tokenizers``.

Shared by the tests of the byte-fallback BPE (``sys.path`` gets this folder, as for
``cli_run.py``). A BPE is trained with ``tokenizers``' own trainer on the bundled text plus a few
lines of accents, CJK and emoji, with a small alphabet so that rare characters are missing and
take the byte-fallback path. It is then laid out as SentencePiece models are (``<unk>``, the
special tokens, the 256 ``<0xNN>`` byte tokens, then the learned pieces) and wrapped in the
normalizer, pre-tokenizer and decoder of each family, exactly as transformers' converters write
them for Llama 2 / Mistral (legacy and not) and Gemma.

Two vocabularies: ``"words"`` is learned on words (each starting with ``"▁"``), as SentencePiece
does; ``"runs"`` on whole lines, so some of its merges join across a ``"▁"`` (``"e▁"``,
``"▁of▁the"``): the hard case for cutting a long word into pieces.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)

from buildlm.data.corpora import load_corpus

EXTRA = "Émigré café, naïve façade; Ærøskøbing. 日本語のテキスト。中文文本。 emoji 🙂🎉 ok.\n" * 3
LLAMA_SPECIALS = ["<unk>", "<s>", "</s>"]
MISTRAL_CONTROL = ["[INST]", "[/INST]"]
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
GEMMA_TURNS = ["<start_of_turn>", "<end_of_turn>"]
STYLES = ("llama", "llama_metaspace", "mistral_v3", "gemma", "metaspace_split")


def training_text() -> str:
    return load_corpus("the-verdict")[:40000] + "\n" + EXTRA


@cache
def learned(
    kind: str, vocab_size: int = 700
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """``(pieces in id order, merges)`` learned by tokenizers' BpeTrainer."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    if kind == "words":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, limit_alphabet=70, show_progress=False)
    tok.train_from_iterator(training_text().splitlines(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    pieces = tuple(t for t, _ in sorted(model["vocab"].items(), key=lambda item: item[1]))
    merges = tuple(tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"])
    return pieces, merges


def build(style: str, path: Path, kind: str = "runs", vocab_size: int = 700) -> Path:
    """Write the tokenizer.json of ``style`` (one of `STYLES`) to ``path``; returns ``path``."""
    pieces, merges = learned(kind, vocab_size)
    gemma = style == "gemma"
    head = GEMMA_SPECIALS if gemma else LLAMA_SPECIALS
    vocab: dict[str, int] = {t: i for i, t in enumerate(head)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    unk = "<unk>"
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges), unk_token=unk,
                               byte_fallback=True, fuse_unk=True))  # fmt: skip
    strip = [decoders.Strip(" ", 1, 0)]
    spm_decoder = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if style in ("llama", "mistral_v3"):  # transformers' LlamaConverter, legacy=True
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
        )
        tok.decoder = decoders.Sequence(spm_decoder + strip)
    elif style == "llama_metaspace":  # LlamaConverter, legacy=False
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence(spm_decoder + strip)
    elif gemma:  # transformers' GemmaConverter
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
        tok.decoder = decoders.Sequence(spm_decoder)
    elif style == "metaspace_split":  # an older conversion: Metaspace both ways
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always", split=True)
        tok.decoder = decoders.Metaspace(prepend_scheme="always")
    else:
        raise ValueError(style)
    specials = head + (GEMMA_TURNS if gemma else MISTRAL_CONTROL if style == "mistral_v3" else [])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.save(str(path))
    return path
