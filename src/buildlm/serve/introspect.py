"""Looking inside the model for the web page: how text splits into tokens, where heads attend.

``POST /v1/tokenize`` answers each token's id and text. A token is a run of *bytes*, not always
whole characters: an emoji or an accented letter may be split across tokens, and a lone piece
of a character shows as U+FFFD (the replacement character), which is exactly what a learner
should see.

``POST /v1/attention`` runs the tokenized text through ``GPT.get_attention_weights`` (the
explicit attention formula, so the weights exist) and answers one head's (T, T) matrix: row q
says how much query position q attends to each key position (each row sums to 1; the upper
triangle is 0 because attention is causal). Only the last ``max_attention_tokens`` tokens are
used: the weights grow as T squared. It comes in three parts: checking and tokenizing
(`attention_ids`) and writing the answer (`attention_answer`) run off the event loop like any
other request's text work; the forward pass (`attention_weights`) runs on the scheduler's
thread, as every use of the model does.
"""

from __future__ import annotations

from typing import Any

import torch

from buildlm.infer.chat_format import ChatFormat
from buildlm.serve.errors import APIError
from buildlm.serve.prompts import encode, encode_chat
from buildlm.serve.schemas import AttentionRequest, InspectRequest


def inspect_ids(req: InspectRequest, tokenizer: Any, fmt: ChatFormat) -> list[int]:
    """The ids a request asks about: ``text`` as given, or ``messages`` as a chat request
    encodes them (special tokens only from the template)."""
    if (req.text is None) == (req.messages is None):
        raise APIError(400, "give exactly one of 'text' and 'messages'", param="text")
    if req.messages is not None:
        return encode_chat(tokenizer, fmt, req.messages, req.add_generation_prompt)
    return encode(tokenizer, req.text)


def token_pieces(tokenizer: Any, ids: list[int]) -> list[dict[str, Any]]:
    """Each id with its text (bytes decoded on their own, U+FFFD where a character is split)
    and whether it is a special token (``<|endoftext|>``, a chat format's markers)."""
    specials = set(getattr(tokenizer, "special_tokens", {}).values())
    return [
        {
            "id": i,
            "text": tokenizer.token_bytes(i).decode("utf-8", errors="replace"),
            "special": i in specials,
        }
        for i in ids
    ]


def tokenize(req: InspectRequest, tokenizer: Any, fmt: ChatFormat, max_tokens: int) -> dict:
    """``{"tokens": [{"id", "text"}, ...], "count": N}`` (at most ``max_tokens`` listed)."""
    ids = inspect_ids(req, tokenizer, fmt)
    return {"count": len(ids), "tokens": token_pieces(tokenizer, ids[:max_tokens])}


def attention_ids(
    req: AttentionRequest, config: Any, tokenizer: Any, fmt: ChatFormat, max_tokens: int
) -> tuple[list[int], bool]:
    """The ids whose attention is drawn (the last ``max_tokens``), and whether text was cut.

    Checks the layer and head against the model's ``config`` first (a 400 for a wrong one).
    """
    if req.layer >= config.n_layers:
        raise APIError(400, f"layer {req.layer} does not exist (0..{config.n_layers - 1})", "layer")
    if req.head >= config.n_heads:
        raise APIError(400, f"head {req.head} does not exist (0..{config.n_heads - 1})", "head")
    ids = inspect_ids(req, tokenizer, fmt)
    if not ids:
        raise APIError(400, "the text is empty; nothing to attend to", param="text")
    kept = ids[-min(max_tokens, config.context_length) :]
    if max(kept) >= config.vocab_size:
        raise APIError(400, "the text has tokens the model does not know", param="text")
    return kept, len(ids) > len(kept)


def attention_weights(model: Any, ids: list[int], layer: int, head: int) -> torch.Tensor:
    """One head's (T, T) attention weights over ``ids``: the model's forward pass, which the
    server runs on its scheduler thread (`buildlm.serve.scheduler.Scheduler.call`)."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        weights = model.get_attention_weights(torch.tensor([ids], device=device))
    return weights[layer][0, head].float().cpu()  # (T, T)


def attention_answer(
    req: AttentionRequest, config: Any, tokenizer: Any, ids: list[int], truncated: bool,
    matrix: torch.Tensor,
) -> dict:  # fmt: skip
    """The JSON answer: the tokens, and the weights rounded to 4 decimals."""
    return {
        "layer": req.layer,
        "head": req.head,
        "n_layers": config.n_layers,
        "n_heads": config.n_heads,
        "truncated": truncated,
        "tokens": token_pieces(tokenizer, ids),
        "weights": [[round(w, 4) for w in row] for row in matrix.tolist()],
    }
