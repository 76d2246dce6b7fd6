"""The text steps around a SentencePiece-style ``tokenizer.json``: normalizer, pre-tokenizer, decoder.

A Hugging Face tokenizer is a pipeline: ``text -> normalizer -> pre-tokenizer -> model -> ids``
and back ``ids -> decoder -> text``. SentencePiece-style tokenizers write a space as ``"▁"``
(U+2581) inside tokens, so ``" world"`` is the token ``"▁world"``, and the steps around the BPE
model put that mark in and take it out again. The families differ only in these steps:

- Llama 2, Mistral, Mixtral (the "legacy" files): normalizer ``Prepend("▁")`` then
  ``Replace(" ", "▁")``, no pre-tokenizer. Every piece of text between two special tokens gets
  its own leading ``"▁"``, as if it started a sentence.
- The same models converted with ``legacy=false``: no normalizer, and a ``Metaspace``
  pre-tokenizer (``prepend_scheme="first"``: only the very start of the text gets a ``"▁"``).
- Gemma 1/2/3: normalizer ``Replace(" ", "▁")`` only (nothing prepended), pre-tokenizer
  ``Split(" ", MergedWithPrevious)`` (a no-op once the spaces are gone).
- Decoders: ``Replace("▁", " ")``, ``ByteFallback`` (``<0x0A>`` is the byte 0x0A: bytes of a
  character the vocabulary lacks), ``Fuse`` (join), and for Llama 2 / Mistral ``Strip(" ", 1)``,
  which removes the one space a prepended ``"▁"`` left at the start of the text.

Each step is read from its JSON into a small frozen dataclass; anything else raises
``ValueError`` naming the file and the step. The decoder is reduced to what it does to *one*
token (`Decoder.token_bytes`), which is what streaming needs: the text of a sequence is the
concatenation of its tokens' bytes, the first token read with ``first=True``.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass

SPACE_MARK = "▁"  # SentencePiece's visible space (U+2581)
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # a byte-fallback token: <0x00> .. <0xFF>


# --- normalizers: the whole text, before anything else ------------------------------------


@dataclass(frozen=True)
class Prepend:
    """Put ``text`` in front of a non-empty piece (``"▁"``: every piece starts a word)."""

    text: str

    def __call__(self, s: str) -> str:
        return self.text + s if s else s


@dataclass(frozen=True)
class Replace:
    """Replace every ``old`` by ``new`` (``" "`` by ``"▁"``, or back when decoding)."""

    old: str
    new: str

    def __call__(self, s: str) -> str:
        return s.replace(self.old, self.new)


@dataclass(frozen=True)
class UnicodeForm:
    """Unicode normalization (``"NFC"``, ``"NFD"``, ``"NFKC"`` or ``"NFKD"``)."""

    form: str

    def __call__(self, s: str) -> str:
        return unicodedata.normalize(self.form, s)


Normalizer = tuple  # of the steps above, applied in order


def read_normalizer(spec: dict | None, path: str | os.PathLike) -> Normalizer:
    """The steps of a ``normalizer`` entry (``None``: no normalizer)."""
    if spec is None:
        return ()
    kind = spec.get("type")
    if kind == "Sequence":
        return tuple(
            s for step in spec.get("normalizers") or [] for s in read_normalizer(step, path)
        )
    if kind == "Prepend":
        return (Prepend(spec["prepend"]),)
    if kind == "Replace":
        return (Replace(_string_pattern(spec, path, "normalizer"), spec["content"]),)
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        return (UnicodeForm(kind),)
    raise ValueError(
        f"{path}: unsupported normalizer {kind!r} (supported: Prepend, Replace, NFC...)"
    )


def normalize(steps: Normalizer, text: str) -> str:
    for step in steps:
        text = step(text)
    return text


# --- pre-tokenizers: cut the normalized text into words ------------------------------------


@dataclass(frozen=True)
class Metaspace:
    """Spaces become ``replacement``; one is put in front unless the piece has one already
    (``prepend_scheme``: ``"always"``, ``"first"`` = only at the start of the text, ``"never"``);
    with ``split`` each ``"▁"`` starts a new word."""

    replacement: str = SPACE_MARK
    prepend_scheme: str = "always"
    split: bool = True

    def __call__(self, piece: str, at_start: bool) -> list[str]:
        mark = self.replacement
        piece = piece.replace(" ", mark)
        prepend = self.prepend_scheme == "always" or (self.prepend_scheme == "first" and at_start)
        if piece and prepend and not piece.startswith(mark):
            piece = mark + piece
        if not self.split:
            return [piece]
        return re.findall(f"{re.escape(mark)}[^{re.escape(mark)}]*|[^{re.escape(mark)}]+", piece)


_SPLIT = {  # how Split keeps its delimiter s: the words as a regex over s
    "MergedWithPrevious": "(?s:.*?{s}|.+)",
    "MergedWithNext": "(?s:{s}(?:(?!{s}).)*|(?:(?!{s}).)+)",
    "Isolated": "(?s:{s}|(?:(?!{s}).)+)",
    "Contiguous": "(?s:(?:{s})+|(?:(?!{s}).)+)",
    "Removed": "(?s:(?:(?!{s}).)+)",
}


@dataclass(frozen=True)
class SplitOn:
    """Cut at each occurrence of a fixed string, keeping it as ``behavior`` says."""

    pattern: str
    behavior: str

    def __call__(self, piece: str, at_start: bool) -> list[str]:
        return re.findall(_SPLIT[self.behavior].format(s=re.escape(self.pattern)), piece)


PreTokenizer = tuple  # of the steps above, applied in order


def read_pre_tokenizer(spec: dict | None, path: str | os.PathLike) -> PreTokenizer:
    """The steps of a ``pre_tokenizer`` entry (``None``: the whole piece is one word)."""
    if spec is None:
        return ()
    kind = spec.get("type")
    if kind == "Sequence":
        steps = spec.get("pretokenizers") or []
        return tuple(s for step in steps for s in read_pre_tokenizer(step, path))
    if kind == "Metaspace":
        scheme = spec.get("prepend_scheme", "always")
        if spec.get("add_prefix_space") is False:
            scheme = "never"
        return (Metaspace(spec.get("replacement", SPACE_MARK), scheme, spec.get("split", True)),)
    if kind == "Split" and spec.get("behavior") in _SPLIT and not spec.get("invert"):
        return (SplitOn(_string_pattern(spec, path, "pre-tokenizer"), spec["behavior"]),)
    raise ValueError(
        f"{path}: unsupported pre-tokenizer {kind!r} for a byte-fallback BPE "
        "(supported: Metaspace, Split on a string)"
    )


def pre_tokenize(steps: PreTokenizer, piece: str, at_start: bool) -> list[str]:
    """The words of ``piece``; ``at_start``: the piece begins the text (Metaspace's "first")."""
    words = [piece]
    for step in steps:
        words = [w for k, word in enumerate(words) for w in step(word, at_start and k == 0)]
    return words


# --- decoder: ids back to text, one token at a time ---------------------------------------


@dataclass(frozen=True)
class Decoder:
    """What a ``decoder`` entry does to one token, so that a text is its tokens' bytes joined.

    ``text_steps`` (Replace, or Metaspace's mark -> space) change each token's text;
    ``byte_fallback`` reads ``<0xNN>`` as the byte NN; ``strip_first`` spaces are removed from
    the start of the whole text (``Strip`` after ``Fuse``). A Metaspace decoder drops the marks
    of the first token instead of turning them into spaces.
    """

    text_steps: tuple = ()
    byte_fallback: bool = False
    strip_first: int = 0
    strip_char: str = " "

    def token_bytes(self, token: str, first: bool) -> tuple[bytes, bool]:
        """``(bytes, is a byte token)`` of ``token``, read as the text's first token or not."""
        for step in self.text_steps:
            token = (
                step.first(token) if first and isinstance(step, MetaspaceDecode) else step(token)
            )
        is_byte = self.byte_fallback and BYTE_TOKEN.fullmatch(token) is not None
        data = bytes([int(token[3:5], 16)]) if is_byte else token.encode("utf-8")
        if first and self.strip_first and data.startswith(self.strip_char.encode("utf-8")):
            data = data[len(self.strip_char.encode("utf-8")) :]
        return data, is_byte


@dataclass(frozen=True)
class MetaspaceDecode:
    """Metaspace as a decoder: the mark becomes a space, or nothing in the first token."""

    replacement: str
    drop_in_first: bool

    def __call__(self, token: str) -> str:
        return token.replace(self.replacement, " ")

    def first(self, token: str) -> str:
        return token.replace(self.replacement, "" if self.drop_in_first else " ")


def read_decoder(spec: dict | None, path: str | os.PathLike) -> Decoder:
    """The `Decoder` of a ``decoder`` entry, or ``ValueError`` for steps it cannot stream.

    Supported: text steps (Replace on a string, Metaspace), then ByteFallback, then Fuse, then
    ``Strip`` of at most one leading character, the shape of every SentencePiece conversion.
    """
    if spec is None:
        raise ValueError(f"{path}: a byte-fallback BPE needs a decoder (e.g. ByteFallback)")
    steps = (spec.get("decoders") or []) if spec.get("type") == "Sequence" else [spec]
    text_steps: list = []
    byte_fallback = fused = False
    strip_first, strip_char = 0, " "
    for step in steps:
        kind = step.get("type")
        late = byte_fallback or fused or strip_first
        if kind == "Replace" and not late:
            text_steps.append(Replace(_string_pattern(step, path, "decoder"), step["content"]))
        elif kind == "Metaspace" and not late:
            scheme = step.get("prepend_scheme", "always")
            drop = scheme != "never" and step.get("add_prefix_space", True) is not False
            text_steps.append(MetaspaceDecode(step.get("replacement", SPACE_MARK), drop))
        elif kind == "ByteFallback" and not late:
            byte_fallback = True
        elif kind == "Fuse" and not strip_first:
            fused = True
        elif kind == "Strip" and fused and step.get("start", 0) <= 1 and not step.get("stop"):
            strip_first, strip_char = step.get("start", 0), step.get("content", " ")
        else:
            raise ValueError(
                f"{path}: unsupported decoder step {kind!r} here (supported: Replace and "
                "Metaspace, then ByteFallback, Fuse, and Strip of one leading character)"
            )
    return Decoder(tuple(text_steps), byte_fallback, strip_first, strip_char)


def _string_pattern(spec: dict, path: str | os.PathLike, where: str) -> str:
    pattern = spec.get("pattern") or {}
    if "String" not in pattern:
        raise ValueError(
            f"{path}: unsupported {where} {spec.get('type')} on {pattern!r}; only fixed strings "
            "(not regexes) are supported"
        )
    return pattern["String"]
