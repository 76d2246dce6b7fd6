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

    def forward(
        self, seq_len: int, offset: int = 0, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rows offset..offset+seq_len (T, d_model), or one row per entry of ``positions`` (B, T)."""
        if positions is not None:
            return self.weight[positions]  # (B, T, d_model)
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
        self.context_length, self.d_model = context_length, d_model
        self.register_buffer("table", sinusoidal_table(context_length, d_model), persistent=False)

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """Recompute the table on ``device`` (after building the model on the meta device)."""
        table = sinusoidal_table(self.context_length, self.d_model)
        self.table = table.to(device) if device is not None else table

    def forward(
        self, seq_len: int, offset: int = 0, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        if positions is not None:
            return self.table[positions]  # (B, T, d_model)
        return self.table[offset : offset + seq_len]  # (T, d_model)


def rope_inverse_frequencies(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation speed of each dimension pair: theta^(-2i/head_dim), shape (head_dim/2,)."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)


FrequencyScaling = Callable[[torch.Tensor], torch.Tensor]
"""Maps the inverse frequencies to new ones (the hook for Llama-3 / YaRN style long-context
scaling, which slows the low-frequency pairs down so positions past the trained length stay in
the range the model has seen)."""


def llama3_scaling(
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_context_length: int,
) -> FrequencyScaling:
    """Llama 3.1's long-context RoPE scaling, as a `FrequencyScaling`.

    Llama 3 was pretrained on ``original_context_length`` (8192) tokens, then extended to 128K.
    A dimension pair that turns slowly (wavelength 2*pi/inv_freq longer than
    original_context_length / low_freq_factor) never completed a turn during pretraining, so
    its angles past 8K would be new to the model: it is slowed down by ``factor``. Pairs that turn
    fast (wavelength shorter than original_context_length / high_freq_factor) saw every angle and
    carry fine local order: left alone. Pairs in between blend the two, linearly in
    original_context_length / wavelength (the number of turns over the original context).
    """
    long_wave = original_context_length / low_freq_factor  # slower than this: divide by factor
    short_wave = original_context_length / high_freq_factor  # faster than this: unchanged

    def scale(inv_freq: torch.Tensor) -> torch.Tensor:
        wavelength = 2 * math.pi / inv_freq  # (head_dim/2,) positions per full turn
        turns = original_context_length / wavelength
        blend = (turns - low_freq_factor) / (high_freq_factor - low_freq_factor)  # 0 .. 1
        blended = (1 - blend) * inv_freq / factor + blend * inv_freq
        scaled = torch.where(wavelength > long_wave, inv_freq / factor, inv_freq)
        in_between = (wavelength >= short_wave) & (wavelength <= long_wave)
        return torch.where(in_between, blended, scaled)

    return scale


def rope_frequency_scaling(rope_scaling: dict | None) -> FrequencyScaling | None:
    """The `FrequencyScaling` that ``ModelConfig.rope_scaling`` names (None for plain RoPE)."""
    if rope_scaling is None:
        return None
    params = {k: v for k, v in rope_scaling.items() if k != "type"}
    if rope_scaling.get("type") == "llama3":
        return llama3_scaling(**params)
    raise ValueError(f"unsupported rope_scaling {rope_scaling!r}; supported types: llama3")


INITIAL_ROPE_TABLE = 4096
"""Positions the cos/sin tables cover at first; they grow (doubling) when a longer sequence
comes. A model's ``context_length`` can be 128K (Gemma 3, Llama 3.1): full tables would take
``2 x 131072 x head_dim x 4`` bytes per RoPE base (256 MiB at head_dim 256) before a single
token is read, more than many of the weights."""


class RotaryEmbedding(nn.Module):
    """Rotary position embedding applied to queries and keys of shape (B, H, T, head_dim).

    cos/sin tables (buffers, not parameters) are precomputed for the first ``table_length``
    positions, and recomputed longer when a forward pass needs more (`cover`), never past
    ``context_length``. ``offset`` is the position of the first token, which is non-zero when
    decoding with a key/value cache.
    """

    def __init__(
        self,
        head_dim: int,
        context_length: int,
        theta: float = 10000.0,
        scaling: FrequencyScaling | None = None,
    ) -> None:
        super().__init__()
        self.head_dim, self.context_length, self.theta = head_dim, context_length, theta
        self.scaling = scaling
        self.table_length = min(context_length, INITIAL_ROPE_TABLE)
        if torch.empty(0).device.type == "meta":
            # Shapes only (a model built on the meta device before its weights load); the tables
            # are computed by `reset_buffers`. Computing them here on meta would run PyTorch's
            # symbolic-shape machinery (it imports sympy: ~1 s) for tables nobody reads.
            cos = sin = torch.empty(self.table_length, head_dim)
        else:
            cos, sin = self._tables()
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(
        self, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of every (position, pair) angle, each (table_length, head_dim)."""
        inv_freq = rope_inverse_frequencies(self.head_dim, self.theta)
        if self.scaling is not None:
            inv_freq = self.scaling(inv_freq)
        angles = torch.outer(torch.arange(self.table_length, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim): pair i <-> i + head_dim/2
        if device is not None:
            angles = angles.to(device)
        return angles.cos(), angles.sin()

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """Recompute the cos/sin tables on ``device`` (after building the model on meta)."""
        self.cos, self.sin = self._tables(device)

    def cover(self, length: int) -> None:
        """Make the tables reach position ``length - 1`` (doubling, at most ``context_length``).

        Called by the model with the sequence's end before its layers run, so ``forward`` only
        looks rows up. The new rows equal the ones full tables would hold: each angle is the
        same float32 product position x frequency.
        """
        if length <= self.table_length:
            return
        self.table_length = min(self.context_length, max(length, 2 * self.table_length))
        self.cos, self.sin = self._tables(self.cos.device)

    def forward(
        self, x: torch.Tensor, offset: int = 0, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rotate x (B, H, T, head_dim) for positions offset.. or for ``positions`` (B, T)."""
        if positions is not None:  # each row its own positions (left-padded batches)
            cos = self.cos[positions][:, None].to(x.dtype)  # (B, 1, T, head_dim)
            sin = self.sin[positions][:, None].to(x.dtype)
        else:
            seq_len = x.shape[-2]
            self.cover(offset + seq_len)
            cos = self.cos[offset : offset + seq_len].to(x.dtype)  # (T, head_dim)
            sin = self.sin[offset : offset + seq_len].to(x.dtype)
        return x * cos + rotate_half(x) * sin


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90-degree turn per pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)
