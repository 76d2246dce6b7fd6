"""The feed-forward (MLP) sub-layer: where each token is processed on its own.

Attention mixes information between positions; the MLP then transforms every position
independently with two (GELU, ReLU²) or three (SwiGLU, GeGLU) matrices. It holds about two thirds of a GPT's
non-embedding parameters.

- GELU MLP (GPT-2): up-project to 4*d_model, GELU, down-project. GPT-2 used the tanh
  approximation  gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))),  and matching it
  exactly matters when loading GPT-2 weights.
- SwiGLU (Llama): two parallel up-projections, one passed through SiLU (x * sigmoid(x)) acts as
  a learned gate on the other:  down(silu(gate(x)) * up(x)).
- GeGLU (Gemma): the same gated MLP with the tanh-GELU as the gate's activation.
- ReLU² (Primer, modded-nanogpt, nanochat): GPT-2's two matrices with relu(x)^2 in place of
  GELU:  down(relu(up(x))^2).

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


class ReluSquaredMLP(nn.Module):
    """The squared-ReLU MLP: Linear(d, ff) -> relu(.)^2 -> Linear(ff, d) -> dropout.

    Why square a ReLU? So et al. (2021, "Primer: Searching for Efficient Transformers for
    Language Modeling") let a program search over Transformer variants and found that this one
    change made language models reach a given loss with noticeably less compute; nanoGPT speed-run
    descendants (modded-nanogpt, nanochat) kept it because it trains faster at small scale too.
    - Sparse: like ReLU, every negative pre-activation gives exactly 0, so roughly half the
      hidden units are silent for a token (and their weights get no gradient from it).
    - Smooth where it matters: x^2 has slope 2x, which is 0 at the kink, so the output and its
      slope are continuous at 0, unlike ReLU's corner; large activations grow quadratically, a
      built-in emphasis on the units that respond strongly.
    - Cheap: a max and a multiply, no exp/tanh as in GELU or SiLU, and two matrices instead of a
      gated MLP's three, so the hidden width stays GPT-2's 4*d_model at the same parameters.
    The weights are named ``up`` and ``down`` as in the gated MLPs (and Hugging Face's
    ``up_proj``/``down_proj`` for the same MLP in Nemotron and Arcee), there is just no ``gate``.
    """

    def __init__(self, d_model: int, d_ff: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.down.residual_projection = True  # scaled at init: GPT.reset_parameters
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.up(x)).square()  # (B, T, d_ff), >= 0, zero for negative inputs
        return self.dropout(self.down(h))  # (B, T, d_model)


def make_mlp(kind: str, d_model: int, d_ff: int, bias: bool, dropout: float) -> nn.Module:
    """The MLP a config asks for (``"gelu"``, ``"swiglu"``, ``"geglu"`` or ``"relu2"``)."""
    if kind == "gelu":
        return GeluMLP(d_model, d_ff, bias=bias, dropout=dropout)
    if kind == "swiglu":
        return SwiGLUMLP(d_model, d_ff, bias=bias, dropout=dropout)
    if kind == "geglu":
        return GeGLUMLP(d_model, d_ff, bias=bias, dropout=dropout)
    if kind == "relu2":
        return ReluSquaredMLP(d_model, d_ff, bias=bias, dropout=dropout)
    raise ValueError(f"unknown mlp {kind!r}; choose 'gelu', 'swiglu', 'geglu' or 'relu2'")
