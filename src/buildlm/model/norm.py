"""Normalisation layers: LayerNorm (GPT-2) and RMSNorm (Llama, Qwen).

A deep stack of residual blocks keeps adding to the same vector; without normalisation its
scale drifts and training becomes unstable. Both layers rescale each token's vector on its own
(over the last dimension), then apply a learned per-feature gain.

- LayerNorm centres the vector (subtracts its mean), divides by its standard deviation, then
  applies a gain and a bias:  y = (x - mean) / sqrt(var + eps) * weight + bias.
- RMSNorm skips the centring and the bias and divides by the root mean square:
  y = x / sqrt(mean(x^2) + eps) * weight. It is cheaper and works as well in practice.
  Gemma stores the gain as an offset from one, y = ... * (1 + weight), with weights starting at
  zero (``offset=1.0``): the same function, but weight decay then pulls the gain towards 1.

RMSNorm is written out below. LayerNorm calls PyTorch's fused ``F.layer_norm`` kernel, which
computes exactly the formula above in one pass over memory forward and one backward; spelled out
as separate tensor operations it took about 5% of a GPT-2 training step on CPU (every operation
reads and writes the whole activation tensor). `layer_norm_reference` keeps the spelled-out
version, and the tests check both against each other and against ``torch.nn.LayerNorm``.

Statistics are computed in float32 even when the activations are bf16/fp16 (mixed precision):
a mean of many low-precision numbers loses digits that matter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def layer_norm_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """LayerNorm spelled out: (x - mean) / sqrt(var + eps) * weight + bias, over the last dim."""
    var, mean = torch.var_mean(x.float(), dim=-1, keepdim=True, correction=0)  # (..., 1) each
    y = (x.float() - mean) * torch.rsqrt(var + eps) * weight
    return (y if bias is None else y + bias).to(x.dtype)


class LayerNorm(nn.Module):
    """Layer normalisation over the last dimension, with an optional bias (GPT-2 has one)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The fused kernel of layer_norm_reference (it accumulates in float32 for bf16 inputs).
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension (no centring, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-6, offset: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        self.offset = offset  # the gain is offset + weight; it starts at 1 either way
        self.weight = nn.Parameter(torch.full((dim,), 1.0 - offset))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        gain = self.weight if self.offset == 0.0 else self.offset + self.weight.float()
        return (y * gain).to(dtype)


def make_norm(kind: str, dim: int, eps: float, bias: bool = True, offset: float = 0.0) -> nn.Module:
    """The norm layer a config asks for (``"layernorm"`` or ``"rmsnorm"``, its gain ``offset``)."""
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps, offset=offset)
    raise ValueError(f"unknown norm {kind!r}; choose 'layernorm' or 'rmsnorm'")
