"""Turning next-token logits into a chosen token: temperature, top-k, top-p, sampling.

The model gives a score (logit) for every vocabulary entry; softmax turns scores into
probabilities. How we pick from them shapes the text:

- Greedy (temperature 0): always the most likely token. Deterministic, often repetitive.
- Temperature T: divide the logits by T before the softmax. T < 1 sharpens the distribution
  (safer), T > 1 flattens it (more surprising).
- Top-k: keep only the k highest logits, so a long tail of unlikely tokens cannot be drawn.
- Top-p (nucleus): keep the smallest set of most-likely tokens whose probabilities add up to at
  least p; the set grows when the model is unsure and shrinks when it is confident.

Filtered tokens get logit -inf (probability 0). Sampling takes a ``torch.Generator`` so a seed
reproduces the same text.

These functions are the short names for the common case; each is a thin wrapper around the
composable processors in `buildlm.infer.processors` (which also hold min-p and the repetition,
frequency and presence penalties), so there is one implementation of every rule.
"""

from __future__ import annotations

import torch

from buildlm.infer.processors import TopK, TopP, build_processors, choose_next


def _no_ids(logits: torch.Tensor) -> torch.Tensor:
    """An empty (B, 0) id tensor: the warpers never look at the ids."""
    return torch.empty(logits.shape[0], 0, dtype=torch.long, device=logits.device)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the rest to -inf. logits: (B, V)."""
    return TopK(k)(_no_ids(logits), logits)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the most likely tokens whose total probability reaches p.

    A token is dropped when the probability mass of itself and every less likely token is at
    most 1 - p, so the most likely token always survives.
    """
    return TopP(p)(_no_ids(logits), logits)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row from next-token logits (B, V); returns ids of shape (B,)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    scores = build_processors(temperature, top_k, top_p)(_no_ids(logits), logits.float())
    return choose_next(scores, greedy=False, generator=generator)
