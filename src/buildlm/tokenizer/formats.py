"""Tokenizer files: GPT-2's ``encoder.json`` + ``vocab.bpe``, tiktoken rank files, and our own JSON.

Every format describes the same thing, a map from byte strings to ids, written down differently:

- **tiktoken rank files** (``cl100k_base.tiktoken``): one line per token, ``base64(bytes) rank``.
- **GPT-2** (``encoder.json`` + ``vocab.bpe``): JSON cannot hold raw bytes, so OpenAI mapped each of
  the 256 byte values to a printable Unicode character (:func:`gpt2_bytes_to_unicode`; the space
  byte becomes ``"Ġ"``) and wrote tokens as strings of those characters. ``vocab.bpe`` lists
  the merges in the order they were learned.
- **buildlm JSON** (``tok.json``): one human-readable file with the pattern, the 256 byte tokens,
  the merges in order and the special tokens. A token's bytes are written as UTF-8 text where
  they are valid UTF-8, with ``\\xNN`` for any other byte and ``\\\\`` for a backslash, so the
  file is readable (``[" t", "he"]``) and still exact (:func:`escape_bytes`).

Merges and ranks carry the same information: merge ``i`` creates the token of rank ``256 + i``.
Going back from ranks to merges (:func:`merges_from_ranks`) replays BPE on each token's bytes
using only lower-ranked tokens; what is left is the pair that created it.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import re
from pathlib import Path

from buildlm.atomic import atomic_file
from buildlm.tokenizer.merge import split_parts
from buildlm.tokenizer.patterns import PATTERNS

FORMAT = "buildlm-bpe"
VERSION = 1


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of a file, decompressing it first when its name ends in ``.gz``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: not a valid gzip file ({err})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


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


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Recover the ordered merges from a rank table (the standard way, as tiktoken's docs do).

    For every multi-byte token in rank order, run BPE on its bytes allowing only tokens of lower
    rank; BPE stops exactly one merge short of the token, leaving the two parts that made it.
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = split_parts(token, ranks, max_rank=rank)
        if len(parts) != 2:
            raise ValueError(
                f"token {token!r} (rank {rank}) cannot be built by merging two lower-ranked tokens; "
                "this rank table is not a BPE merge list"
            )
        merges.append((parts[0], parts[1]))
    return merges


# --- our JSON format ---------------------------------------------------------------------------

_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})?")


def escape_bytes(token: bytes) -> str:
    """Readable, lossless text for a token: UTF-8 as text, other bytes as ``\\xNN``, ``\\`` doubled."""
    return token.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def unescape_bytes(text: str) -> bytes:
    """Inverse of :func:`escape_bytes`; a stray backslash raises ``ValueError``."""
    if "\\" not in text:
        return text.encode("utf-8")
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        escape = m.group(1)
        if escape is None:
            raise ValueError(
                f"bad escape in token {text!r}: use \\\\ for a backslash, \\xNN for a byte"
            )
        out += text[pos : m.start()].encode("utf-8")
        out += b"\\" if escape == "\\" else bytes([int(escape[1:], 16)])
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def write_json_tokenizer(
    path: str | os.PathLike,
    pattern: str,
    pattern_name: str | None,
    byte_tokens: list[bytes],
    merges: list[tuple[bytes, bytes]],
    special_tokens: dict[str, int],
) -> None:
    """Write the buildlm JSON file atomically (temporary file in the same folder, then rename).

    One merge per line keeps the file readable and diff-friendly.
    """
    vocab_size = max([255 + len(merges), *special_tokens.values()]) + 1
    head = {
        "format": FORMAT,
        "version": VERSION,
        "pattern_name": pattern_name,
        "pattern": pattern,
        "vocab_size": vocab_size,
        "special_tokens": special_tokens,
    }
    lines = [json.dumps(head, ensure_ascii=False, indent=1)[:-2] + ","]
    lines.append(
        ' "byte_tokens": '
        + json.dumps([escape_bytes(b) for b in byte_tokens], ensure_ascii=False)
        + ","
    )
    lines.append(' "merges": [')
    body = [json.dumps([escape_bytes(a), escape_bytes(b)], ensure_ascii=False) for a, b in merges]
    lines.append(",\n".join(body))
    lines.append("]}\n")
    atomic_write_text(path, "\n".join(lines))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text to ``path`` atomically (`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through `buildlm.atomic.atomic_file` (a temporary file beside
    it, flushed, then renamed: a reader sees the old file or the new one, never a partial one).

    ``path`` is a file the user named (``--out``), so its folder must exist: a typo in the
    folder is reported as such rather than created.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"the folder {str(path.parent)!r} does not exist; create it first or choose another "
            f"place for {path.name!r}"
        )
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def read_json(path: str | os.PathLike) -> object:
    """Parsed JSON; invalid JSON raises ``ValueError`` naming the file."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err}); the file is corrupted or truncated"
        ) from None


def is_hf_tokenizer(data: object) -> bool:
    """True for parsed JSON that looks like a Hugging Face ``tokenizer.json``."""
    return isinstance(data, dict) and "format" not in data and "model" in data


def read_json_tokenizer(
    path: str | os.PathLike, data: object = None
) -> tuple[str, list[bytes], list[tuple[bytes, bytes]], dict[str, int]]:
    """Read and validate a buildlm JSON file: ``(pattern, byte tokens, merges, special tokens)``.

    ``data`` is the already parsed file, if the caller has it. Any problem raises
    ``ValueError`` naming the file and what is wrong with it.
    """
    if data is None:
        data = read_json(path)

    def bad(problem: str) -> ValueError:
        return ValueError(f"{path}: {problem}")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f'not a buildlm tokenizer file (expected "format": "{FORMAT}")')
    if data.get("version") != VERSION:
        raise bad(
            f"unsupported version {data.get('version')!r}; this buildlm reads version {VERSION}"
        )
    for key, kind in [
        ("pattern", str),
        ("byte_tokens", list),
        ("merges", list),
        ("special_tokens", dict),
    ]:
        if not isinstance(data.get(key), kind):
            raise bad(f"field {key!r} is missing or not a {kind.__name__}")
    try:
        byte_tokens = [unescape_bytes(t) for t in data["byte_tokens"]]
        merges = []
        for i, pair in enumerate(data["merges"]):
            if not (
                isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)
            ):
                raise ValueError(f"merge {i} is {pair!r}, expected two token strings")
            merges.append((unescape_bytes(pair[0]), unescape_bytes(pair[1])))
    except (ValueError, TypeError, UnicodeEncodeError) as err:
        raise bad(str(err)) from None
    if sorted(byte_tokens) != [bytes([b]) for b in range(256)]:
        raise bad("'byte_tokens' must list each of the 256 single bytes exactly once")
    specials = data["special_tokens"]
    if not all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in specials.items()):
        raise bad("'special_tokens' must map token strings to non-negative integer ids")
    return data["pattern"], byte_tokens, merges, specials


# --- Hugging Face tokenizer.json (byte-level BPE) ---------------------------------------------


def read_hf_tokenizer(
    path: str | os.PathLike, data: object = None
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], dict[str, int], str]:
    """Read a byte-level BPE ``tokenizer.json``: ``(id -> bytes, merges, special tokens, pattern)``.

    This is the format of GPT-2, Llama 3 and Qwen checkpoints on the Hugging Face Hub: tokens are
    written with GPT-2's byte map, the pre-tokenizer is ``ByteLevel`` (GPT-2's regex) or a
    ``Split`` regex followed by ``ByteLevel``. Other kinds of tokenizer raise ``ValueError``.
    """
    if data is None:
        data = read_json(path)
    model = data.get("model") if isinstance(data, dict) else None
    if (
        not isinstance(model, dict)
        or model.get("type") != "BPE"
        or not isinstance(model.get("vocab"), dict)
    ):
        raise ValueError(
            f"{path}: not a BPE tokenizer.json (expected model.type 'BPE' with a vocab)"
        )
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
