"""How a transformer knows word order: learned, sinusoidal and rotary positions.

Attention by itself is order-blind: it compares every token with every other token, and a
permuted sentence gives permuted (but otherwise identical) outputs. Position information fixes
that, in one of three ways:

- Learned (GPT-2): a trainable vector per position, added to the token embedding. Simple, but
  the model cannot go past the ``context_length`` it was built with.
- Sinusoidal (the original Transformer): a fixed vector per position made of sines and cosines of
  geometrically spaced frequencies,  PE[p, 2i] = sin(p / 10000^(2i/d)),
  PE[p, 2i+1] = cos(p / 10000^(2i/d)).  Nothing to learn.
- Rotary, RoPE (Llama, Qwen): nothing is added to the embedding. Instead queries and keys are
  rotated, pair of dimensions by pair of dimensions, by an angle proportional to their position.
  The dot product of two rotated vectors depends only on the *difference* of their positions,
  so attention scores become relative-position aware, and vector lengths are unchanged.

This code uses the "rotate half" pairing (dimension i is paired with i + head_dim/2), the layout
Hugging Face Llama checkpoints use, so their weights load without permutation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


class LearnedPositionalEmbedding(nn.Module):
    """A trainable (context_length, d_model) table; row p is added to the token at position p."""

    def __init__(self, context_length: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(context_length, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, seq_len: int, offset: int = 0) -> torch.Tensor:
        return self.weight[offset : offset + seq_len]  # (T, d_model)


def sinusoidal_table(context_length: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed sine/cosine position table of "Attention Is All You Need"; shape (T, d_model)."""
    position = torch.arange(context_length, dtype=torch.float32)[:, None]  # (T, 1)
    # 1 / base^(2i/d) for i = 0 .. d/2-1, computed in log space for accuracy.
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(base) / d_model)
    )
    angles = position * inv_freq  # (T, d_model/2)
    table = torch.empty(context_length, d_model)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table


class SinusoidalPositionalEmbedding(nn.Module):
    """Fixed sinusoidal positions (a non-trainable buffer, recomputed rather than saved)."""

    def __init__(self, context_length: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(context_length, d_model), persistent=False)

    def forward(self, seq_len: int, offset: int = 0) -> torch.Tensor:
        return self.table[offset : offset + seq_len]  # (T, d_model)


def rope_inverse_frequencies(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation speed of each dimension pair: theta^(-2i/head_dim), shape (head_dim/2,)."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)


FrequencyScaling = Callable[[torch.Tensor], torch.Tensor]
"""Maps the inverse frequencies to new ones (the hook for Llama-3 / YaRN style long-context
scaling, which slows the low-frequency pairs down so positions past the trained length stay in
the range the model has seen)."""


class RotaryEmbedding(nn.Module):
    """Rotary position embedding applied to queries and keys of shape (B, H, T, head_dim).

    cos/sin tables for every position up to ``context_length`` are precomputed once (buffers, not
    parameters). ``offset`` is the position of the first token, which is non-zero when decoding
    with a key/value cache.
    """

    def __init__(
        self,
        head_dim: int,
        context_length: int,
        theta: float = 10000.0,
        scaling: FrequencyScaling | None = None,
    ) -> None:
        super().__init__()
        inv_freq = rope_inverse_frequencies(head_dim, theta)
        if scaling is not None:
            inv_freq = scaling(inv_freq)
        angles = torch.outer(torch.arange(context_length, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim): pair i <-> i + head_dim/2
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        seq_len = x.shape[-2]
        cos = self.cos[offset : offset + seq_len].to(x.dtype)  # (T, head_dim)
        sin = self.sin[offset : offset + seq_len].to(x.dtype)
        return x * cos + rotate_half(x) * sin


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90-degree turn per pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)
