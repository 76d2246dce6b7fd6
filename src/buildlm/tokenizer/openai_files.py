"""OpenAI's tokenizer files: GPT-2's ``encoder.json`` + ``vocab.bpe``, and tiktoken rank files.

Both describe the same thing, a map from byte strings to ids, written down differently:

- **tiktoken rank files** (``cl100k_base.tiktoken``): one line per token, ``base64(bytes) rank``.
- **GPT-2** (``encoder.json`` + ``vocab.bpe``): JSON cannot hold raw bytes, so OpenAI mapped each of
  the 256 byte values to a printable Unicode character (:func:`gpt2_bytes_to_unicode`; the space
  byte becomes ``"Ġ"``) and wrote tokens as strings of those characters. ``vocab.bpe`` lists
  the merges in the order they were learned. Hugging Face's ``tokenizer.json`` (``hf_json.py``)
  writes tokens with the same byte map.

A rank file holds no merges: ``merge.merges_from_ranks`` recovers them from the ranks.
"""

from __future__ import annotations

import base64
import binascii
import json
import os

from buildlm.tokenizer.files import read_text


def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters.

    Bytes that are already visible Latin-1 characters (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``)
    stand for themselves; the others (control bytes, space, ...) are given the characters from
    U+0100 on, in byte order. So byte 32 (space) becomes U+0120 ``"Ġ"`` and 10 (newline) ``"Ċ"``.
    """
    visible = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {b: chr(b) for b in visible}
    extra = 0x100
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(extra)
            extra += 1
    return mapping


def read_gpt2(
    encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], dict[str, int]]:
    """Read GPT-2's two files: ``(id -> token bytes, merges in order, special tokens)``.

    Tokens listed in ``encoder.json`` that are neither a single byte nor made by a merge in
    ``vocab.bpe`` are special tokens (GPT-2 has one, ``<|endoftext|>``).
    """
    try:
        encoder = json.loads(read_text(encoder_json))
    except json.JSONDecodeError as err:
        raise ValueError(f"{encoder_json}: not valid JSON ({err})") from None
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise ValueError(f"{encoder_json}: expected a JSON object mapping token strings to ids")
    byte_of = {ch: b for b, ch in gpt2_bytes_to_unicode().items()}

    def to_bytes(token: str, where: str) -> bytes:
        try:
            return bytes(byte_of[ch] for ch in token)
        except KeyError as err:
            raise ValueError(
                f"{where}: {token!r} has character {err.args[0]!r} outside GPT-2's byte map"
            ) from None

    merges: list[tuple[bytes, bytes]] = []
    mergeable = {ch for ch in byte_of}
    for lineno, line in enumerate(read_text(vocab_bpe).splitlines(), 1):
        if not line or line.startswith("#version"):
            continue
        pair = line.split(" ")
        if len(pair) != 2:
            raise ValueError(
                f"{vocab_bpe}:{lineno}: expected two tokens separated by one space, got {line!r}"
            )
        merges.append(
            (to_bytes(pair[0], f"{vocab_bpe}:{lineno}"), to_bytes(pair[1], f"{vocab_bpe}:{lineno}"))
        )
        mergeable.add(pair[0] + pair[1])
    missing = [t for t in mergeable if t not in encoder]
    if missing:
        raise ValueError(
            f"{encoder_json}: {len(missing)} tokens of {vocab_bpe} are missing, e.g. {missing[0]!r}"
        )
    vocab = {encoder[t]: to_bytes(t, str(encoder_json)) for t in mergeable}
    specials = {t: i for t, i in encoder.items() if t not in mergeable}
    return vocab, merges, specials


def read_tiktoken(path: str | os.PathLike) -> dict[int, bytes]:
    """Read a tiktoken rank file (``base64token rank`` per line; ``.gz`` accepted): id -> bytes."""
    vocab: dict[int, bytes] = {}
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line:
            continue
        fields = line.split()
        try:
            token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
            if len(fields) != 2 or rank < 0:
                raise ValueError
        except (ValueError, IndexError, binascii.Error):
            raise ValueError(
                f"{path}:{lineno}: expected 'base64token rank', got {line[:80]!r}"
            ) from None
        if rank in vocab:
            raise ValueError(f"{path}:{lineno}: rank {rank} appears twice")
        vocab[rank] = token
    if not vocab:
        raise ValueError(f"{path}: no tokens in the rank file")
    return vocab
