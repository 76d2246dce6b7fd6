"""A SentencePiece-style `SentencePieceBPE` <-> the ``tokenizer.ggml.*`` fields of a GGUF file.

Llama 2, Mistral, Mixtral and Gemma tokenize with SentencePiece's byte-fallback BPE. llama.cpp
reads such a tokenizer as ``tokenizer.ggml.model = "llama"`` and runs SentencePiece's own
algorithm (``llm_tokenizer_spm`` in its ``src/llama-vocab.cpp``), which has no merge list:

1. put a space in front of the text (``add_space_prefix``, and again after every special token),
   write each space as ``"▁"`` and cut the text into characters;
2. repeatedly join the two neighbours whose concatenation is a token with the highest
   ``score`` (the leftmost pair on a tie);
3. a character that is no token becomes its ``<0xNN>`` byte tokens.

Hugging Face's ``tokenizer.json`` says the same thing with a ranked list of pairs (what
`SentencePieceBPE` reads). The fields written here:

- ``tokens``: one string per id (``"▁the"``, ``"<0x0A>"``, ``"<bos>"``), as many as the model has
  embedding rows; ``token_type``: 1 normal, 2 unknown, 3 control (a special token),
  4 user-defined (an added, non-special token), 5 unused (a padding row), 6 byte (``<0xNN>``);
- ``scores``: the tokens merges make, in the order of the first merge that makes each, score
  0, -1, -2, ..., so llama.cpp's highest-score-first order is Hugging Face's lowest-rank-first
  order (a vocabulary whose every token is made by one merge: minus the merge's rank). Tokens no
  merge makes score lower (only characters, in a well-formed vocabulary). Read back and written
  again, a file keeps its scores;
- ``bos`` / ``eos`` / ``unk`` / ``padding_token_id``, ``add_bos_token = false`` (buildlm's
  ``encode`` never prepends one), ``add_eos_token = false`` and ``add_space_prefix``.

The two algorithms agree when the merge list is *complete*: every split of a token into two
tokens is a merge, ranked by the token it makes, which is how transformers converts a
SentencePiece model (Llama 2, Mistral, Gemma). A merge list learned by Hugging Face's own trainer
lacks some splits, and llama.cpp may then join a pair the list never would
(`missing_splits` lists them). Hugging Face's ``Metaspace`` pre-tokenizer is another near
miss: it adds no ``"▁"`` to text that already starts with one (nor, with
``prepend_scheme="first"``, after a special token), where llama.cpp always adds it; such an
export warns. Reading a file back, the merges are rebuilt complete, each
token's splits in score order, so that buildlm tokenizes as llama.cpp does (llama.cpp's own
converter writes -1000 for every token of a tokenizer.json-only model: scores that tie
everywhere mean "leftmost pair first", which no ranked list can say exactly).
"""

from __future__ import annotations

import warnings
from typing import Any

from buildlm.tokenizer import SentencePieceBPE
from buildlm.tokenizer.hf_pipeline import SPACE_MARK

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNUSED_SCORE = -10000.0  # llama.cpp's converter's score for padding rows
_BYTE_TOKENS = {f"<0x{b:02X}>" for b in range(256)}


def _merge_pairs(model: dict) -> list[tuple[str, str]]:
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def _add_space_prefix(data: dict) -> bool:
    """Whether the tokenizer puts a ``"▁"`` in front of the text, refusing what llama.cpp's
    SentencePiece tokenizer cannot do (it only prepends a space and writes spaces as ``"▁"``)."""
    norm, pre = data.get("normalizer"), data.get("pre_tokenizer")
    steps = (norm.get("normalizers") if norm.get("type") == "Sequence" else [norm]) if norm else []
    prefix = False
    for step in steps:
        kind = step.get("type")
        pattern = step.get("pattern", {})
        if kind == "Prepend" and step.get("prepend") == SPACE_MARK:
            prefix = True
        elif not (kind == "Replace" and pattern.get("String") == " "
                  and step.get("content") == SPACE_MARK):  # fmt: skip
            raise ValueError(
                f"this tokenizer's normalizer step {kind!r} has no llama.cpp equivalent; GGUF "
                "export supports SentencePiece-style tokenizers that only prepend and replace '▁'"
            )
    if pre is None or (pre.get("type") == "Split" and pre.get("pattern") == {"String": " "}):
        return prefix  # Gemma's Split(" ") finds no space once they are all '▁'s
    if pre.get("type") != "Metaspace" or pre.get("replacement", SPACE_MARK) != SPACE_MARK:
        raise ValueError(
            f"this tokenizer's pre-tokenizer {pre.get('type')!r} has no llama.cpp equivalent"
        )
    if pre.get("split", True):
        joined = [t for t in data["model"]["vocab"] if SPACE_MARK in t[1:]]
        if joined:
            raise ValueError(
                f"this tokenizer cuts words at '▁' but has tokens across one ({joined[0]!r}); "
                "llama.cpp does not cut, so a GGUF export would tokenize differently"
            )
    scheme = "never" if pre.get("add_prefix_space") is False else pre.get("prepend_scheme")
    if scheme != "never" and not prefix:
        warnings.warn(
            "this tokenizer's Metaspace pre-tokenizer puts no '▁' before text that starts with a "
            "space" + (" or follows a special token" if scheme == "first" else "") + "; "
            "llama.cpp always does, so its ids for such text differ from buildlm's",
            stacklevel=4,
        )
    return prefix or scheme != "never"


def missing_splits(tokenizer: SentencePieceBPE) -> list[tuple[str, str]]:
    """Splits of a token into two ordinary tokens that are not merges: pairs llama.cpp would
    join and Hugging Face's BPE would not (none, for a SentencePiece-converted vocabulary)."""
    model = tokenizer.to_hf_json()["model"]
    vocab, merges = model["vocab"], set(_merge_pairs(model))
    ordinary = {t for t in vocab if t not in _BYTE_TOKENS}
    return [(t[:k], t[k:]) for t in ordinary for k in range(1, len(t))
            if t[:k] in ordinary and t[k:] in ordinary and (t[:k], t[k:]) not in merges]  # fmt: skip


def spm_tokenizer_fields(tokenizer: SentencePieceBPE, vocab_size: int) -> dict[str, Any]:
    """The GGUF tokenizer fields of ``tokenizer`` on a model with ``vocab_size`` embeddings."""
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model only {vocab_size} "
            "embeddings; pass the tokenizer the model was trained with"
        )
    data = tokenizer.to_hf_json()
    model = data["model"]
    add_space_prefix = _add_space_prefix(data)
    merges = _merge_pairs(model)
    made_by: dict[str, int] = {}  # token -> its place among the tokens merges make, in rank order
    for a, b in merges:
        made_by.setdefault(a + b, len(made_by))
    low = -float(len(made_by))  # below every merged token's score
    tokens: list[str | None] = [None] * vocab_size
    scores = [UNUSED_SCORE] * vocab_size
    types = [UNUSED] * vocab_size
    byte_fallback = bool(model.get("byte_fallback"))
    for text, i in model["vocab"].items():
        tokens[i] = text
        scores[i] = -float(made_by[text]) if text in made_by else low
        types[i] = BYTE if byte_fallback and text in _BYTE_TOKENS else NORMAL
    for added in data["added_tokens"]:
        i = added["id"]
        tokens[i] = added["content"]
        types[i] = CONTROL if added["special"] else USER_DEFINED
        scores[i] = -1000.0 if tokens[i] not in made_by else scores[i]
    unk = model.get("unk_token")
    unk_id = model["vocab"].get(unk) if unk is not None else None
    if unk_id is not None:
        types[unk_id] = UNKNOWN
    for i, text in enumerate(tokens):
        if text is None:  # an id the tokenizer never produces: a padding row
            tokens[i] = f"[PAD{i}]"
    specials = tokenizer.special_tokens
    return {
        "model": "llama",
        "pre": "default",
        "tokens": tokens,
        "scores": scores,
        "token_type": types,
        "bos_token_id": specials.get(tokenizer.bos) if tokenizer.bos else None,
        "eos_token_id": tokenizer.eot_token,
        "unknown_token_id": unk_id,
        "padding_token_id": specials.get("<pad>"),
        "add_bos_token": False,
        "add_eos_token": False,
        "add_space_prefix": add_space_prefix,
    }


def spm_tokenizer_from_fields(fields: dict[str, Any]) -> SentencePieceBPE:
    """A `SentencePieceBPE` that tokenizes as llama.cpp does the ``"llama"`` GGUF ``fields``."""
    tokens, types = fields["tokens"], fields.get("token_type") or [NORMAL] * len(fields["tokens"])
    scores = fields.get("scores") or [0.0] * len(tokens)
    if not len(tokens) == len(types) == len(scores):
        raise ValueError("GGUF tokenizer.ggml.tokens, scores and token_type differ in length")
    vocab: dict[str, int] = {}
    added = []
    for i, (text, kind) in enumerate(zip(tokens, types, strict=True)):
        if kind == UNUSED:
            continue
        if kind in (CONTROL, USER_DEFINED, UNKNOWN):
            added.append({"id": i, "content": text, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": kind != USER_DEFINED})  # fmt: skip
        if kind != USER_DEFINED:
            vocab.setdefault(text, i)
    # Every split of an ordinary token into two ordinary tokens, highest-scoring token first:
    # the pairs llama.cpp's SentencePiece tokenizer may join, in the order it prefers them.
    ordinary: dict[str, int] = {}
    for i, (text, kind) in enumerate(zip(tokens, types, strict=True)):
        if kind == NORMAL:
            ordinary.setdefault(text, i)
    splits = []
    for text, i in ordinary.items():
        for k in range(1, len(text)):
            if text[:k] in ordinary and text[k:] in ordinary:
                splits.append((-scores[i], i, k, text))
    splits.sort()
    merges = [[text[:k], text[k:]] for _, _, k, text in splits]
    unk_id = fields.get("unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None and 0 <= unk_id < len(tokens) else None
    prefix = bool(fields.get("add_space_prefix", True))  # llama.cpp's default for "llama"
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE_MARK}
    normalizer = (
        {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE_MARK}, replace]}
        if prefix else replace
    )  # fmt: skip
    decoders = [
        {"type": "Replace", "pattern": {"String": SPACE_MARK}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
    ]
    if prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    data = {
        "version": "1.0",
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": None,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": True,
            "byte_fallback": BYTE in types, "ignore_merges": False,
            "vocab": vocab, "merges": merges,
        },
    }  # fmt: skip

    def name(key: str) -> str | None:
        i = fields.get(key)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    bos, eos = name("bos_token_id"), name("eos_token_id")
    special = {a["content"] for a in added if a["special"]}
    return SentencePieceBPE(
        data, "tokenizer.ggml (GGUF)", bos if bos in special else None,
        eos if eos in special else None,
    )  # fmt: skip
