"""A buildlm `Tokenizer` <-> the ``tokenizer.ggml.*`` fields of a GGUF file.

A GGUF file carries its tokenizer as metadata, the way llama.cpp reads it for a byte-level BPE
(``tokenizer.ggml.model = "gpt2"``):

- ``tokens``: one string per id, exactly as many as the model has embedding rows. An ordinary
  token is its bytes written with GPT-2's byte-to-character table (the same spelling as in a
  Hugging Face ``vocab.json``: a space is ``Ġ``); a special token is its text.
- ``token_type``: 1 = normal, 3 = control (a special token), 5 = unused (a padding row: an id
  the model has an embedding for but the tokenizer never produces).
- ``merges``: ``"left right"`` in merge order, spelled like the tokens.
- ``pre``: the *name* of the pre-tokenizer regex. llama.cpp does not read a regex from the file;
  it knows a fixed list of them by name, so buildlm's pattern must be one of those (`PRE`).
- ``bos_token_id`` / ``eos_token_id``: buildlm's ``<|endoftext|>``, and ``add_bos_token = false``
  (buildlm never prepends one).

A SentencePiece-style tokenizer (`SentencePieceBPE`: Llama 2, Mistral, Gemma) is written as
``tokenizer.ggml.model = "llama"`` instead, with scores in place of merges (``gguf_spm.py``).
"""

from __future__ import annotations

from typing import Any

from buildlm.hub.gguf_spm import spm_tokenizer_fields, spm_tokenizer_from_fields
from buildlm.tokenizer import SentencePieceBPE, Tokenizer
from buildlm.tokenizer.openai_files import gpt2_bytes_to_unicode
from buildlm.tokenizer.patterns import CL100K, GPT2, O200K

NORMAL, CONTROL, UNUSED = 1, 3, 5

# The regexes Llama 3's and Qwen2's tokenizer.json files hold (Qwen2 splits digits one by one).
LLAMA3 = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")

# llama.cpp's pre-tokenizer name -> the regex it applies. cl100k's regex is Llama 3's written with
# possessive quantifiers, so it exports as "llama-bpe" too (and comes back as Llama 3's spelling).
PRE: dict[str, str] = {"gpt-2": GPT2, "llama-bpe": LLAMA3, "qwen2": QWEN2, "gpt-4o": O200K}
_EXPORT_PRE = {**{regex: name for name, regex in PRE.items()}, CL100K: "llama-bpe"}


def tokenizer_fields(tokenizer: Tokenizer | SentencePieceBPE, vocab_size: int) -> dict[str, Any]:
    """The GGUF tokenizer fields for ``tokenizer`` on a model with ``vocab_size`` embedding rows."""
    if isinstance(tokenizer, SentencePieceBPE):
        return spm_tokenizer_fields(tokenizer, vocab_size)
    pre = _EXPORT_PRE.get(tokenizer.pattern)
    if pre is None:
        raise ValueError(
            "this tokenizer's pre-tokenization regex has no llama.cpp name; GGUF export supports "
            "the gpt2, cl100k and o200k patterns and Llama 3's and Qwen2's regexes"
        )
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model only {vocab_size} "
            "embeddings; pass the tokenizer the model was trained with"
        )
    to_char = gpt2_bytes_to_unicode()

    def spell(token: bytes) -> str:
        return "".join(to_char[b] for b in token)

    specials = {i: text for text, i in tokenizer.special_tokens.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in specials:
            tokens.append(specials[i])
            types.append(CONTROL)
            continue
        try:
            tokens.append(spell(tokenizer.token_bytes(i)))
            types.append(NORMAL)
        except ValueError:  # an id the tokenizer never produces: a padding row
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
    eot = tokenizer.eot_token
    return {
        "model": "gpt2",
        "pre": pre,
        "tokens": tokens,
        "token_type": types,
        "merges": [f"{spell(a)} {spell(b)}" for a, b in tokenizer.merges],
        "bos_token_id": eot,
        "eos_token_id": eot,
    }


def tokenizer_from_fields(fields: dict[str, Any]) -> Tokenizer | SentencePieceBPE:
    """A `Tokenizer` (or a `SentencePieceBPE` for a ``"llama"`` one) from the GGUF tokenizer
    fields (``tokenizer_fields``' keys)."""
    if fields.get("model") == "llama":
        return spm_tokenizer_from_fields(fields)
    if fields.get("model") != "gpt2":
        raise ValueError(
            f"GGUF tokenizer model {fields.get('model')!r} is not supported; buildlm reads "
            "byte-level BPE ('gpt2') and SentencePiece-style ('llama') tokenizers"
        )
    pre = fields.get("pre", "default")
    if pre not in PRE:
        raise ValueError(
            f"GGUF pre-tokenizer {pre!r} is not supported; buildlm reads: {', '.join(PRE)}"
        )
    to_byte = {c: b for b, c in gpt2_bytes_to_unicode().items()}

    def unspell(text: str) -> bytes:
        try:
            return bytes(to_byte[c] for c in text)
        except KeyError:
            raise ValueError(f"GGUF token {text!r} is not a byte-level BPE token") from None

    vocab, specials = {}, {}
    for i, (text, kind) in enumerate(zip(fields["tokens"], fields["token_type"], strict=True)):
        if kind == NORMAL:
            vocab[i] = unspell(text)
        elif kind != UNUSED:  # control and user-defined tokens: special tokens
            specials[text] = i
    merges = []
    for line in fields.get("merges", []):
        left, right = line.split(" ")
        merges.append((unspell(left), unspell(right)))
    return Tokenizer(vocab, PRE[pre], specials, merges=merges)
