"""Hugging Face ``tokenizer.json`` (byte-level BPE): read the Hub's files, write one it reads.

This is the format of GPT-2, Llama 3 and Qwen checkpoints on the Hugging Face Hub. Tokens are
written with GPT-2's byte map (``openai_files.gpt2_bytes_to_unicode``), the model is ``BPE`` with
a ``vocab`` and ordered ``merges``, and the pre-tokenizer is ``ByteLevel`` (GPT-2's regex) or a
``Split`` regex followed by ``ByteLevel``. Special tokens are the ``added_tokens``. Other kinds of
tokenizer are refused with one line here; SentencePiece-style files (byte fallback: Llama 2, Mistral,
Gemma) are read by ``sentencepiece_bpe.py`` instead (`is_sentencepiece_style` tells them apart).
"""

from __future__ import annotations

import json
import os
import re

from buildlm.atomic import atomic_write_text
from buildlm.tokenizer.files import read_json
from buildlm.tokenizer.openai_files import gpt2_bytes_to_unicode
from buildlm.tokenizer.patterns import PATTERNS


def is_hf_tokenizer(data: object) -> bool:
    """True for parsed JSON that looks like a Hugging Face ``tokenizer.json``."""
    return isinstance(data, dict) and "format" not in data and "model" in data


def is_sentencepiece_style(data: dict) -> bool:
    """True for a SentencePiece-style BPE (byte fallback or a ``"▁"`` Metaspace step: Llama 2,
    Mistral, Gemma), which ``sentencepiece_bpe.py`` reads; False for a byte-level one."""
    model = data.get("model")
    if isinstance(model, dict) and model.get("byte_fallback"):
        return True

    def steps(spec: object, key: str) -> list:
        if not isinstance(spec, dict):
            return []
        return (spec.get(key) or []) if spec.get("type") == "Sequence" else [spec]

    found = steps(data.get("pre_tokenizer"), "pretokenizers") + steps(
        data.get("decoder"), "decoders"
    )
    return any(isinstance(s, dict) and s.get("type") == "Metaspace" for s in found)


def bpe_model(path: str | os.PathLike, data: object) -> dict:
    """The ``model`` block of a parsed ``tokenizer.json``, checked to be BPE with a vocab (any
    BPE: byte-level here, byte-fallback in `buildlm.tokenizer.sentencepiece_bpe`)."""
    model = data.get("model") if isinstance(data, dict) else None
    if (
        not isinstance(model, dict)
        or model.get("type") != "BPE"
        or not isinstance(model.get("vocab"), dict)
    ):
        raise ValueError(
            f"{path}: not a BPE tokenizer.json (expected model.type 'BPE' with a vocab)"
        )
    return model


def read_hf_tokenizer(
    path: str | os.PathLike, data: object = None
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], dict[str, int], str]:
    """Read a byte-level BPE ``tokenizer.json``: ``(id -> bytes, merges, special tokens, pattern)``.

    ``data`` is the already parsed file, if the caller has it. Other kinds of tokenizer raise
    ``ValueError`` naming the file.
    """
    if data is None:
        data = read_json(path)
    model = bpe_model(path, data)
    if model.get("byte_fallback"):
        raise ValueError(
            f"{path}: byte-fallback BPE (SentencePiece style) is not supported; only byte-level BPE"
        )
    pattern = _hf_pattern(data.get("pre_tokenizer"), path)
    byte_of = {ch: b for b, ch in gpt2_bytes_to_unicode().items()}
    # Added tokens are matched whole, before BPE. A non-special one that the BPE vocab lacks
    # (Qwen3's "<think>") is still a token the model emits: keep it, as a special token.
    specials = {
        t["content"]: t["id"]
        for t in data.get("added_tokens") or []
        if t.get("special", True) or t["content"] not in model["vocab"]
    }
    vocab: dict[int, bytes] = {}
    for token, i in model["vocab"].items():
        if token in specials:
            continue
        try:
            vocab[i] = bytes(byte_of[ch] for ch in token)
        except KeyError:
            raise ValueError(
                f"{path}: token {token!r} is not written in GPT-2's byte map; "
                "only byte-level BPE tokenizers are supported"
            ) from None
    merges = []
    for pair in model.get("merges") or []:
        left, right = pair.split(" ") if isinstance(pair, str) else pair
        merges.append((bytes(byte_of[ch] for ch in left), bytes(byte_of[ch] for ch in right)))
    return vocab, merges, specials, pattern


def _hf_pattern(pre: dict | None, path) -> str:
    """The pre-tokenization regex of a byte-level tokenizer.json's ``pre_tokenizer``."""
    steps = (
        (pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre])
        if isinstance(pre, dict)
        else []
    )
    pattern = None
    byte_level = False
    for step in steps:
        if step.get("type") == "ByteLevel":
            byte_level = True
            if step.get("add_prefix_space"):
                raise ValueError(f"{path}: ByteLevel add_prefix_space=true is not supported")
            if step.get("use_regex", True):
                pattern = "gpt2"  # HF's ByteLevel regex splits exactly like tiktoken's gpt2 pattern
        elif step.get("type") == "Split" and "Regex" in (step.get("pattern") or {}):
            if step.get("behavior") != "Isolated" or step.get("invert"):
                raise ValueError(
                    f"{path}: only Split pre-tokenizers with behavior 'Isolated' are supported"
                )
            pattern = step["pattern"]["Regex"]
            # a built-in pattern that write_hf_tokenizer rewrote for Oniguruma: take it back
            pattern = next((p for p in PATTERNS.values() if _onig_pattern(p) == pattern), pattern)
        else:
            raise ValueError(f"{path}: unsupported pre-tokenizer step {step.get('type')!r}")
    if not byte_level or pattern is None:
        raise ValueError(
            f"{path}: expected a ByteLevel pre-tokenizer (optionally after a Split regex)"
        )
    return pattern


def _onig_pattern(pattern: str) -> str:
    """The regex rewritten for ``tokenizers``' engine (Oniguruma, Ruby syntax).

    Ruby reads ``X{1,3}+`` as "``X{1,3}``, repeated", not as a possessive ``{1,3}``. In cl100k's
    ``\\p{N}{1,3}+`` nothing follows inside that alternative, so the greedy ``\\p{N}{1,3}``
    matches the same text. Other ``{n,m}+`` uses cannot be rewritten safely here.
    """
    pattern = pattern.replace(r"\p{N}{1,3}+", r"\p{N}{1,3}")
    if re.search(r"\{\d+(,\d*)?\}\+", pattern):
        raise ValueError(
            "the pattern uses a possessive {n,m}+ quantifier, which Hugging Face tokenizers "
            "reads differently; rewrite it with an atomic group (?>...{n,m})"
        )
    return pattern


def write_hf_tokenizer(
    path: str | os.PathLike,
    vocab: dict[int, bytes],
    merges: list[tuple[bytes, bytes]],
    special_tokens: dict[str, int],
    pattern: str,
    pattern_is_gpt2: bool,
) -> None:
    """Write a ``tokenizer.json`` that Hugging Face ``tokenizers`` loads (atomically)."""
    to_str = gpt2_bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(to_str[b] for b in token)

    # Special tokens go into the model's vocab too, as in GPT-2's own tokenizer.json: tokenizers
    # gives an added token that the vocab lacks the next free id, ignoring the id written here.
    model_vocab = {text(b): i for i, b in sorted(vocab.items())}
    for token, i in sorted(special_tokens.items(), key=lambda item: item[1]):
        model_vocab.setdefault(token, i)
    byte_level = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": pattern_is_gpt2,
    }
    if pattern_is_gpt2:
        pre = byte_level
    else:
        pattern = _onig_pattern(pattern)
        split = {
            "type": "Split",
            "pattern": {"Regex": pattern},
            "behavior": "Isolated",
            "invert": False,
        }
        pre = {"type": "Sequence", "pretokenizers": [split, byte_level]}
    data = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for t, i in sorted(special_tokens.items(), key=lambda item: item[1])
        ],
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": None,
        "decoder": {**byte_level, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": model_vocab,
            "merges": [[text(a), text(b)] for a, b in merges],
        },
    }
    atomic_write_text(path, json.dumps(data, ensure_ascii=False))
