"""Autoregressive generation, the simple way: feed the whole (cropped) context every step.

Each step runs the model on the sequence so far, takes the logits of the last position, picks
a token (see `buildlm.infer.sampling`) and appends it. This recomputes attention over the whole
prefix at every step, O(T^2) work per token; the key/value-cache engine avoids that and is the
tool for long outputs. This version is short, obviously correct, and the reference the faster
engine is tested against.
"""

from __future__ import annotations

import torch
from torch import nn

from buildlm.infer.processors import build_processors, choose_next, validate_processor_settings


def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    *,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
) -> torch.Tensor:
    """Extend each row of ``idx`` (B, T) by up to ``max_new_tokens`` tokens.

    Returns the ids *including* the prompt, shape (B, T + n) with n <= max_new_tokens.
    ``temperature=0`` is greedy decoding. The model only sees the last
    ``model.config.context_length`` tokens. Generation stops early once every row has produced
    ``eos_id``; rows that finished earlier are padded with ``eos_id``. ``seed`` makes sampling
    reproducible without touching the global random state.

    ``min_p``, ``repetition_penalty``, ``frequency_penalty`` and ``presence_penalty`` are the
    extra rules of `buildlm.infer.processors`; their defaults change nothing. The penalties see
    each row's whole history (the repetition penalty counts the prompt, the frequency and
    presence penalties only the generated tokens) and also apply to greedy decoding.
    """
    validate_processor_settings(
        temperature, top_k, top_p, min_p, repetition_penalty, frequency_penalty, presence_penalty
    )
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if idx.dim() == 1:
        raise ValueError("idx must have shape (batch, time); use idx[None] for a single prompt")
    if idx.dim() != 2 or idx.shape[1] == 0 or idx.shape[0] == 0:
        raise ValueError(f"idx must be a non-empty (batch, time) tensor, got {tuple(idx.shape)}")
    if idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
    context = model.config.context_length
    device = next(model.parameters()).device
    idx = idx.to(device=device, dtype=torch.long)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    processors = build_processors(
        temperature, top_k, top_p, min_p, repetition_penalty, frequency_penalty,
        presence_penalty, prompt_length=idx.shape[1],
    )  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            done = torch.zeros(idx.shape[0], dtype=torch.bool, device=device)
            for _ in range(max_new_tokens):
                logits = model(idx[:, -context:])[:, -1, :]  # (B, vocab): next-token scores
                scores = processors(idx, logits.float())  # (B, vocab), history-aware
                nxt = choose_next(scores, greedy=temperature == 0, generator=generator)  # (B,)
                if eos_id is not None:
                    nxt = nxt.masked_fill(done, eos_id)
                    done |= nxt == eos_id
                idx = torch.cat([idx, nxt[:, None]], dim=1)
                if eos_id is not None and bool(done.all()):
                    break
    finally:
        model.train(was_training)
    return idx
