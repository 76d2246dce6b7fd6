"""The feed-forward (MLP) sub-layer: where each token is processed on its own.

Attention mixes information between positions; the MLP then transforms every position
independently with two (GELU) or three (SwiGLU) matrices. It holds about two thirds of a GPT's
non-embedding parameters.

- GELU MLP (GPT-2): up-project to 4*d_model, GELU, down-project. GPT-2 used the tanh
  approximation  gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))),  and matching it
  exactly matters when loading GPT-2 weights.
- SwiGLU (Llama): two parallel up-projections, one passed through SiLU (x * sigmoid(x)) acts as
  a learned gate on the other:  down(silu(gate(x)) * up(x)).
- GeGLU (Gemma): the same gated MLP with the tanh-GELU as the gate's activation.

The activation functions are PyTorch's fused kernels (one pass over memory instead of several);
the tests check them against the formulas above.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeluMLP(nn.Module):
    """GPT-2's MLP: Linear(d, ff) -> GELU(tanh) -> Linear(ff, d) -> dropout."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.proj.residual_projection = True  # scaled at init: GPT.reset_parameters
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc(x), approximate="tanh")  # (B, T, d_ff)
        return self.dropout(self.proj(h))  # (B, T, d_model)


class SwiGLUMLP(nn.Module):
    """Llama's MLP: Linear(ff, d)( silu(Linear(d, ff) x) * Linear(d, ff) x ) -> dropout."""

    @staticmethod
    def activation(x: torch.Tensor) -> torch.Tensor:
        """The gate's nonlinearity (SiLU here; GeGLU overrides it)."""
        return F.silu(x)

    def __init__(self, d_model: int, d_ff: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.down.residual_projection = True
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.activation(self.gate(x)) * self.up(x)  # (B, T, d_ff)
        return self.dropout(self.down(h))  # (B, T, d_model)


class GeGLUMLP(SwiGLUMLP):
    """Gemma's MLP: SwiGLU's three matrices with a tanh-GELU gate instead of SiLU."""

    @staticmethod
    def activation(x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


def make_mlp(kind: str, d_model: int, d_ff: int, bias: bool, dropout: float) -> nn.Module:
    """The MLP a config asks for (``"gelu"``, ``"swiglu"`` or ``"geglu"``)."""
    if kind == "gelu":
        return GeluMLP(d_model, d_ff, bias=bias, dropout=dropout)
    if kind == "swiglu":
        return SwiGLUMLP(d_model, d_ff, bias=bias, dropout=dropout)
    if kind == "geglu":
        return GeGLUMLP(d_model, d_ff, bias=bias, dropout=dropout)
    raise ValueError(f"unknown mlp {kind!r}; choose 'gelu', 'swiglu' or 'geglu'")
