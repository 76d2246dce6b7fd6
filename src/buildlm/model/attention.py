"""Causal self-attention: how each token gathers information from the tokens before it.

Every token emits a query ("what am I looking for"), a key ("what do I contain") and a value
("what do I pass on"). The attention weights of token i are softmax over j of q_i . k_j / sqrt(d)
(the scaling keeps the dot products at unit variance so the softmax does not saturate); its
output is the weighted sum of the values v_j. A *causal* mask sets the scores of future tokens
(j > i) to -inf before the softmax, so a language model can never peek at the token it must
predict.

Multi-head attention runs ``n_heads`` smaller attentions side by side on slices of d_model, so
different heads can track different relations, then mixes their outputs with a projection.
Grouped-query attention (GQA) lets several query heads share one key/value head
(``n_kv_heads < n_heads``); multi-query attention is the extreme n_kv_heads=1. This shrinks the
key/value cache at inference time with little loss in quality.

Two implementations of the same maths live here:

- `causal_attention`: the explicit formula, which can return the attention weights (for
  teaching and for heatmaps). It materialises a (T, T) score matrix per head.
- PyTorch's ``scaled_dot_product_attention``: one function with several backends. The fused
  ones (flash-attention style, on CPU and GPU) never store the full score matrix; the math
  fallback, used where no fused kernel fits the device, dtype or mask, does. Same result, and
  much faster where a fused kernel runs; used by default.

Two Gemma options change the scores: ``query_pre_attn_scalar`` divides them by sqrt(that number)
instead of sqrt(head_dim), and ``attn_logit_softcap`` bounds them smoothly with
cap * tanh(s / cap) before the mask. No fused kernel applies a soft cap, so a capped model runs
the explicit formula.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from buildlm.model.config import ModelConfig
from buildlm.model.norm import make_norm
from buildlm.model.position import RotaryEmbedding


class KVCache(Protocol):
    """What attention needs from a key/value cache (implemented by ``buildlm.infer``).

    ``offset`` is the number of positions already cached; the model reads it once at the start of
    a forward pass. ``update(layer, k, v)`` appends this step's keys/values of shape
    (B, n_kv_heads, T_new, head_dim) for one layer and returns all of that layer's keys/values,
    (B, n_kv_heads, T_total, head_dim). The cache advances its ``offset`` itself.

    A cache may keep only the last ``window`` positions of a sliding-window layer (a ring, out of
    order); it then also has ``key_slots(window, q_len)``, the position of each key it returns
    (see `buildlm.model.sliding_window.layer_masks`).
    """

    offset: int

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def causal_mask(q_len: int, k_len: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (q_len, k_len) mask, True where query i may attend to key j.

    The queries are the *last* q_len of k_len positions (with a cache, earlier keys come from
    previous steps), so query i sits at absolute position k_len - q_len + i and sees keys up to it.
    """
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)


def padding_attention_mask(key_mask: torch.Tensor, q_len: int, offset: int) -> torch.Tensor:
    """Causal mask that also hides pad keys: (B, Tk) key_mask -> (B, 1, q_len, Tk), True = attend.

    ``key_mask`` is True for real tokens over every key (cached and new, Tk = offset + q_len).
    A pad query can have no real key at or before it; such a query sees itself, so no softmax
    row is empty (an all -inf row gives NaN). Pad outputs are never used.

    A query with a real key in view never sees anything else than the real keys at or before it.
    That lets a fixed-shape decode step (`buildlm.infer.static_decode`) present the whole cache
    as keys, with ``offset = Tk - 1`` and ``key_mask`` marking the slots written so far.
    """
    k_len = key_mask.shape[-1]
    if k_len != offset + q_len:
        raise ValueError(
            f"key_mask covers {k_len} positions, but the keys are {offset} cached + {q_len} new"
        )
    causal = causal_mask(q_len, k_len, device=key_mask.device)  # (Tq, Tk)
    own = torch.arange(k_len, device=key_mask.device)[None, :] == (
        offset + torch.arange(q_len, device=key_mask.device)[:, None]
    )  # (Tq, Tk): each query's own position
    allowed = causal[None] & key_mask[:, None, :]  # (B, Tq, Tk)
    empty = ~allowed.any(dim=-1, keepdim=True)  # (B, Tq, 1): a pad query before any real token
    return (allowed | (own[None] & empty))[:, None]  # (B, 1, Tq, Tk)


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    training: bool = False,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d) + causal mask) V, written out; returns (output, weights).

    q: (B, H, Tq, d); k, v: (B, H, Tk, d). Output (B, H, Tq, d); weights (B, H, Tq, Tk), before
    dropout (what the model "looks at"). ``mask`` (True = may attend), broadcastable to
    (B, H, Tq, Tk), replaces the plain causal mask (padded batches pass one). ``scale``
    replaces 1/sqrt(d); ``softcap`` bounds the scaled scores to (-softcap, softcap).
    """
    if scale is None:
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    else:
        scores = (q @ k.transpose(-2, -1)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is None:
        mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # each row sums to 1
    out = F.dropout(weights, p=dropout_p, training=training) @ v  # (B, H, Tq, d)
    return out, weights


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Share each key/value head with n_rep query heads: (B, KV, T, d) -> (B, KV*n_rep, T, d)."""
    if n_rep == 1:
        return x
    b, kv, t, d = x.shape
    return x[:, :, None].expand(b, kv, n_rep, t, d).reshape(b, kv * n_rep, t, d)


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with one fused QKV projection.

    One Linear produces queries, keys and values together (a single large matmul is faster than
    three small ones, and GPT-2's ``c_attn`` weight has exactly this layout).
    """

    def __init__(self, config: ModelConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        # Keys this layer sees behind each query, its own included (None: all of them, a global
        # layer); the model hands it the matching mask (`buildlm.model.sliding_window`).
        self.sliding_window = config.layer_window(layer_idx)
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        # Gemma's score scale and soft cap (None: 1/sqrt(head_dim), no cap); a cap needs the
        # explicit formula, since no fused kernel applies one.
        scalar = config.query_pre_attn_scalar
        self.scale = None if scalar is None else scalar**-0.5
        self.softcap = config.attn_logit_softcap
        self.use_sdpa = config.attention == "sdpa" and self.softcap is None
        qkv_out = (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        self.qkv = nn.Linear(config.d_model, qkv_out, bias=config.qkv_bias)
        self.proj = nn.Linear(self.n_heads * self.head_dim, config.d_model, bias=config.bias)
        self.proj.residual_projection = True  # scaled at init: GPT.reset_parameters
        self.resid_dropout = nn.Dropout(config.dropout)
        # Norms of q and k keep the scores well scaled: per head (Qwen3, Gemma 3: over head_dim)
        # or over the whole projection before the split into heads (OLMo 2).
        self.qk_norm_all = config.qk_norm_scope == "all"
        if config.qk_norm:
            q_dim, k_dim = self.head_dim, self.head_dim
            if self.qk_norm_all:
                q_dim, k_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
            norm_args = (config.norm_eps, config.bias, config.norm_offset)
            self.q_norm = make_norm(config.norm, q_dim, *norm_args)
            self.k_norm = make_norm(config.norm, k_dim, *norm_args)
        else:
            self.q_norm = self.k_norm = None

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
        """x: (B, T, d_model) -> (output (B, T, d_model), weights (B, H, T, Tk) or None).

        ``offset`` is the absolute position of x's first token (non-zero with a cache).
        ``need_weights`` forces the explicit path so the attention weights can be returned.
        ``positions`` (B, T) gives each row its own RoPE positions and ``mask`` (B, 1, T, Tk)
        says which keys each query may see (both for left-padded batches; see GPT.forward).
        """
        b, t, _ = x.shape
        h, kv, d = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([h * d, kv * d, kv * d], dim=-1)  # (B, T, H*d), (B, T, KV*d)
        if self.q_norm is not None and self.qk_norm_all:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, t, h, d).transpose(1, 2)  # (B, H, T, d)
        k = k.view(b, t, kv, d).transpose(1, 2)  # (B, KV, T, d)
        v = v.view(b, t, kv, d).transpose(1, 2)  # (B, KV, T, d)
        if self.q_norm is not None and not self.qk_norm_all:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q, offset, positions), rope(k, offset, positions)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, KV, Tk, d), Tk = offset + T
        k, v = repeat_kv(k, h // kv), repeat_kv(v, h // kv)  # (B, H, Tk, d)
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights or not self.use_sdpa:
            y, weights = causal_attention(
                q, k, v, dropout_p, self.training, mask, self.scale, self.softcap
            )
        elif mask is not None:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=self.scale
            )
        elif t == k.shape[-2]:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout_p, is_causal=True, scale=self.scale
            )
        else:  # new queries after cached keys: the mask is offset (see causal_mask)
            mask = None if t == 1 else causal_mask(t, k.shape[-2], device=x.device)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=self.scale
            )
        y = y.transpose(1, 2).reshape(b, t, h * d)  # (B, T, H*d): heads side by side again
        return self.resid_dropout(self.proj(y)), weights
