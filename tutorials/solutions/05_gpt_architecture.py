"""Worked answers for tutorials/05_gpt_architecture.ipynb, one section per exercise.

Load one into its cell with ``%load -s NAME solutions/05_gpt_architecture.py``.
"""

# %% exercise: layer_norm
import torch
from torch import nn


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # divides by d, not d - 1
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


# %% exercise: gelu
import math


def gelu(x):
    """GPT-2's GELU, the tanh approximation of x * Phi(x)."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


# %% exercise: feed_forward
from torch import nn


class FeedForward(nn.Module):
    """fc (d_model -> d_ff), GELU, proj (d_ff -> d_model), applied to every position alone."""

    def __init__(self, d_model, d_ff):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff)
        self.proj = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.proj(gelu(self.fc(x)))  # (B, T, d_ff) in between


# %% exercise: transformer_block
from torch import nn


class TransformerBlock(nn.Module):
    """Pre-LN block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, config):
        super().__init__()
        self.norm1 = LayerNorm(config.d_model, config.norm_eps)
        self.attn = MultiHeadAttention(config.d_model, config.n_heads, config.context_length)
        self.norm2 = LayerNorm(config.d_model, config.norm_eps)
        self.mlp = FeedForward(config.d_model, config.d_ff)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))  # the residual stream is never normalised itself
        return x + self.mlp(self.norm2(x))


# %% exercise: gpt_model

from torch import nn


class GPTModel(nn.Module):
    """Embeddings, n_layers TransformerBlocks, final LayerNorm, head tied to tok_emb."""

    def __init__(self, config):
        super().__init__()
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context_length, config.d_model)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))
        self.norm = LayerNorm(config.d_model, config.norm_eps)
        std = config.init_std
        residual_std = std / math.sqrt(2 * config.n_layers)
        with torch.no_grad():
            for name, module in self.named_modules():
                if isinstance(module, nn.Linear):
                    residual = name.endswith(("attn.proj", "mlp.proj"))
                    module.weight.normal_(0.0, residual_std if residual else std)
                    module.bias.zero_()
                elif isinstance(module, nn.Embedding):
                    module.weight.normal_(0.0, std)

    def forward(self, ids):
        t = ids.shape[1]
        x = self.tok_emb(ids) + self.pos_emb(torch.arange(t, device=ids.device))  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x @ self.tok_emb.weight.T  # (B, T, vocab_size): the tied head
