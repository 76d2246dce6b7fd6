"""One transformer block: attention then MLP, each wrapped in a residual connection and a norm.

The residual connection (x + f(x)) gives gradients a straight path through a deep stack. Where
the norm sits matters:

- Pre-LN (GPT-2 and every modern LLM):  x = x + attn(norm1(x));  x = x + mlp(norm2(x)).
  The residual stream itself is never normalised, so a deep model trains stably without careful
  learning-rate warm-up. The model adds one final norm after the last block.
- Post-LN (the original 2017 Transformer):  x = norm1(x + attn(x));  x = norm2(x + mlp(x)).
  Kept for comparison: it needs warm-up and is harder to train deep.
- Branch-post (OLMo 2):  x = x + norm_attn_out(attn(x));  x = x + norm_mlp_out(mlp(x)).
  The norm moves onto each sublayer's output, inside the residual branch: the stream stays
  un-normalised as in pre-LN, and what each block adds to it has a bounded, learned scale.
- Sandwich (Gemma 2 and 3):  x = x + norm_attn_out(attn(norm1(x)));  likewise for the MLP with
  norm2 and norm_mlp_out: norms before and after each sublayer.

Every placement except post-LN leaves the stream itself un-normalised, so the model adds one
final norm after the last block.
"""

from __future__ import annotations

import torch
from torch import nn

from buildlm.model.attention import CausalSelfAttention, KVCache
from buildlm.model.config import ModelConfig
from buildlm.model.mlp import make_mlp
from buildlm.model.moe import MoE
from buildlm.model.norm import make_norm
from buildlm.model.position import RotaryEmbedding


class Block(nn.Module):
    """Attention + MLP with residual connections; the norms sit where ``norm_placement`` says."""

    def __init__(self, config: ModelConfig, layer_idx: int = 0) -> None:
        super().__init__()
        placement = config.norm_placement
        self.post_norm = placement == "post"
        self.pre_norm = placement in ("pre", "sandwich")  # a norm in front of each sublayer

        def norm() -> nn.Module:
            args = (config.d_model, config.norm_eps, config.bias, config.norm_offset)
            return make_norm(config.norm, *args)

        has_in = placement != "branch_post"  # norm1/norm2: in front (or, post-LN, after the add)
        has_out = placement in ("branch_post", "sandwich")  # on each sublayer's output
        self.norm1 = norm() if has_in else None
        self.attn = CausalSelfAttention(config, layer_idx)
        self.norm_attn_out = norm() if has_out else None
        self.norm2 = norm() if has_in else None
        self.mlp: nn.Module = (
            MoE(config)
            if config.is_moe_layer(layer_idx)
            else make_mlp(config.mlp, config.d_model, config.d_ff, config.bias, config.dropout)
        )
        self.norm_mlp_out = norm() if has_out else None

    def forward(
        self,
        x: torch.Tensor,
        rope: RotaryEmbedding | None = None,
        cache: KVCache | None = None,
        offset: int = 0,
        need_weights: bool = False,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, d_model) -> (B, T, d_model), plus attention weights if asked for."""
        attn_args = (rope, cache, offset, need_weights, positions, mask)
        if self.post_norm:
            a, weights = self.attn(x, *attn_args)
            x = self.norm1(x + a)
            x = self.norm2(x + self.mlp(x))
            return x, weights
        a, weights = self.attn(_apply(self.norm1, x), *attn_args)
        x = x + _apply(self.norm_attn_out, a)
        m = self.mlp(_apply(self.norm2, x))
        x = x + _apply(self.norm_mlp_out, m)
        return x, weights


def _apply(norm: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)``, or x itself where this placement has no norm at that spot."""
    return x if norm is None else norm(x)
