"""buildlm's own tokenizer file (``tok.json``): readable, diff-friendly, exact.

One JSON file with the pattern, the 256 byte tokens, the merges in order (one per line) and the
special tokens. A token's bytes are written as UTF-8 text where they are valid UTF-8, with
``\\xNN`` for any other byte and ``\\\\`` for a backslash, so the file is readable
(``[" t", "he"]``) and still exact (:func:`escape_bytes`).
"""

from __future__ import annotations

import json
import os
import re

from buildlm.atomic import atomic_write_text
from buildlm.tokenizer.files import read_json

FORMAT = "buildlm-bpe"
VERSION = 1

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
