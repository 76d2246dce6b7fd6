"""Worked answers for tutorials/04_self_attention.ipynb, one section per exercise.

Load one into its cell with ``%load -s NAME solutions/04_self_attention.py``.
"""

# %% exercise: self_attention
import math

import torch
from torch import nn


class SelfAttention(nn.Module):
    """softmax(Q K^T / sqrt(d_out)) V over all positions (no mask); (B, T, d_in) -> (B, T, d_out)."""

    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        self.query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x):
        q, k, v = self.query(x), self.key(x), self.value(x)  # (B, T, d_out) each
        scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])  # (B, T, T)
        weights = torch.softmax(scores, dim=-1)  # each row sums to 1
        return weights @ v  # (B, T, d_out)


# %% exercise: causal_attention

from torch import nn


class CausalAttention(nn.Module):
    """SelfAttention with a causal mask buffer and dropout on the attention weights."""

    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        self.query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        allowed = torch.ones(context_length, context_length, dtype=torch.bool).tril()
        self.register_buffer("mask", allowed, persistent=False)  # True: query i may see key j

    def forward(self, x):
        t = x.shape[1]
        q, k, v = self.query(x), self.key(x), self.value(x)  # (B, T, d_out) each
        scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])  # (B, T, T)
        scores = scores.masked_fill(~self.mask[:t, :t], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return weights @ v  # (B, T, d_out)


# %% exercise: multi_head_attention

from torch import nn


class MultiHeadAttention(nn.Module):
    """n_heads causal attentions on slices of d_model, with buildlm's weight names qkv and proj."""

    def __init__(self, d_model, n_heads, context_length, dropout=0.0, bias=True):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be a multiple of n_heads"
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        allowed = torch.ones(context_length, context_length, dtype=torch.bool).tril()
        self.register_buffer("mask", allowed, persistent=False)

    def forward(self, x):
        b, t, d = x.shape
        h, hd = self.n_heads, self.head_dim
        q, k, v = self.qkv(x).split(d, dim=-1)  # (B, T, d) each
        q = q.view(b, t, h, hd).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(b, t, h, hd).transpose(1, 2)
        v = v.view(b, t, h, hd).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(hd)  # (B, H, T, T)
        scores = scores.masked_fill(~self.mask[:t, :t], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        z = weights @ v  # (B, H, T, hd)
        z = z.transpose(1, 2).reshape(b, t, d)  # (B, T, H * hd): heads side by side
        return self.proj(z)


# %% exercise: changed_positions


def changed_positions(module, x, t):
    """Positions whose output changes when the input at position t changes."""
    changed = x.clone()
    changed[:, t] += 1.0
    with torch.no_grad():
        difference = (module(x) - module(changed)).abs().amax(dim=(0, 2))  # (T,)
    return difference.nonzero().flatten().tolist()
