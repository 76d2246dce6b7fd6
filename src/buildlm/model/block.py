"""One transformer block: attention then MLP, each wrapped in a residual connection and a norm.

The residual connection (x + f(x)) gives gradients a straight path through a deep stack. Where
the norm sits matters:

- Pre-LN (GPT-2 and every modern LLM):  x = x + attn(norm1(x));  x = x + mlp(norm2(x)).
  The residual stream itself is never normalised, so a deep model trains stably without careful
  learning-rate warm-up. The model adds one final norm after the last block.
- Post-LN (the original 2017 Transformer):  x = norm1(x + attn(x));  x = norm2(x + mlp(x)).
  Kept for comparison: it needs warm-up and is harder to train deep.
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
    """Attention + MLP with residual connections, pre-LN (default) or post-LN."""

    def __init__(self, config: ModelConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.norm1 = make_norm(config.norm, config.d_model, config.norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.norm2 = make_norm(config.norm, config.d_model, config.norm_eps, bias=config.bias)
        self.mlp: nn.Module = (
            MoE(config)
            if config.is_moe_layer(layer_idx)
            else make_mlp(config.mlp, config.d_model, config.d_ff, config.bias, config.dropout)
        )

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
        if self.pre_norm:
            a, weights = self.attn(self.norm1(x), *attn_args)
            x = x + a
            x = x + self.mlp(self.norm2(x))
        else:
            a, weights = self.attn(x, *attn_args)
            x = self.norm1(x + a)
            x = self.norm2(x + self.mlp(x))
        return x, weights
