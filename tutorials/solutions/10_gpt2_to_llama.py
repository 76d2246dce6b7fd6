"""Worked answers for tutorials/10_gpt2_to_llama.ipynb, one section per exercise.

Load one into its cell with ``%load -s NAME solutions/10_gpt2_to_llama.py``, where NAME is the
function or class the exercise asks for (several: comma-separated).
"""

# %% exercise: rope
import torch


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def rope_cos_sin(head_dim, positions, theta=10000.0):
    """cos and sin of every (position, frequency) angle, each (T, head_dim), float32."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim): pair i <-> i + head_dim/2
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate every pair (i, i + head_dim/2) of x (..., T, head_dim) by its angle."""
    return x * cos + rotate_half(x) * sin


# %% exercise: rms_norm
import torch
from torch import nn


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis; no centring, no bias."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()  # the mean of squares in float32, even for bf16 activations
        y = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (y * self.weight).to(x.dtype)


# %% exercise: swiglu
import torch
from torch import nn


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): a gated MLP with three bias-free matrices."""

    def __init__(self, d_model, d_ff):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x):
        g = self.gate(x)  # (B, T, d_ff)
        return self.down(g * torch.sigmoid(g) * self.up(x))  # silu(g) = g * sigmoid(g)


# %% exercise: repeat_kv


def repeat_kv(x, n_rep):
    """(B, KV, T, d) -> (B, KV * n_rep, T, d): key/value head j serves query heads j*n_rep ..."""
    b, kv, t, d = x.shape
    return x[:, :, None].expand(b, kv, n_rep, t, d).reshape(b, kv * n_rep, t, d)


# %% exercise: grouped_query_attention
import math

import torch
from torch import nn


class GroupedQueryAttention(nn.Module):
    """Causal attention with n_heads query heads sharing n_kv_heads key/value heads, and RoPE."""

    def __init__(self, config):
        super().__init__()
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.head_dim = config.head_dim
        qkv_out = (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        self.qkv = nn.Linear(config.d_model, qkv_out, bias=False)
        self.proj = nn.Linear(self.n_heads * self.head_dim, config.d_model, bias=False)

    def project(self, x):
        b, t, _ = x.shape
        h, kv, d = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([h * d, kv * d, kv * d], dim=-1)
        q = q.view(b, t, h, d).transpose(1, 2)  # (B, H, T, d)
        k = k.view(b, t, kv, d).transpose(1, 2)  # (B, KV, T, d)
        v = v.view(b, t, kv, d).transpose(1, 2)  # (B, KV, T, d)
        return q, k, v

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q, k, v = self.project(x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # positions enter here, only
        n_rep = self.n_heads // self.n_kv_heads
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, T, d)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, T)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(diagonal=1)
        weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        return self.proj(y)


# %% exercise: qk_norm


class QKNormAttention(GroupedQueryAttention):
    """Qwen3's attention: each head's query and key RMS-normalised before RoPE."""

    def __init__(self, config):
        super().__init__(config)
        self.q_norm = RMSNorm(config.head_dim, config.norm_eps)
        self.k_norm = RMSNorm(config.head_dim, config.norm_eps)

    def project(self, x):
        q, k, v = super().project(x)
        return self.q_norm(q), self.k_norm(k), v  # over head_dim, each head on its own


# %% exercise: llama_model
import torch
from torch import nn


class LlamaBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x), cos, sin), then x + mlp(norm2(x)); RMSNorm, SwiGLU."""

    def __init__(self, config):
        super().__init__()
        self.norm1 = RMSNorm(config.d_model, config.norm_eps)
        attention = QKNormAttention if config.qk_norm else GroupedQueryAttention
        self.attn = attention(config)
        self.norm2 = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config.d_model, config.d_ff)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class LlamaModel(nn.Module):
    """Token embedding, n_layers LlamaBlocks, final RMSNorm, a head (tied or not); no pos_emb."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(LlamaBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = (
            None
            if config.tie_embeddings
            else nn.Linear(config.d_model, config.vocab_size, bias=False)
        )

    def forward(self, ids):
        positions = torch.arange(ids.shape[1], device=ids.device)
        cos, sin = rope_cos_sin(self.config.head_dim, positions, self.config.rope_theta)
        x = self.tok_emb(ids)  # (B, T, d): no position is added here
        for block in self.blocks:
            x = block(x, cos, sin)
        x = self.norm(x)
        return x @ self.tok_emb.weight.T if self.lm_head is None else self.lm_head(x)


# %% exercise: convert_llama
import torch


def convert_llama(hf_state, config):
    """A LlamaModel state dict from a Hugging Face Llama / Qwen3 state dict."""
    out = {"tok_emb.weight": hf_state["model.embed_tokens.weight"]}
    for i in range(config.n_layers):
        hf, ours = f"model.layers.{i}.", f"blocks.{i}."
        attn = hf + "self_attn."
        out[ours + "norm1.weight"] = hf_state[hf + "input_layernorm.weight"]
        out[ours + "attn.qkv.weight"] = torch.cat(
            [hf_state[attn + f"{p}_proj.weight"] for p in "qkv"], dim=0
        )  # rows: [q | k | v], the order project() splits them in
        out[ours + "attn.proj.weight"] = hf_state[attn + "o_proj.weight"]
        if config.qk_norm:
            out[ours + "attn.q_norm.weight"] = hf_state[attn + "q_norm.weight"]
            out[ours + "attn.k_norm.weight"] = hf_state[attn + "k_norm.weight"]
        out[ours + "norm2.weight"] = hf_state[hf + "post_attention_layernorm.weight"]
        for ours_name, hf_name in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            out[ours + f"mlp.{ours_name}.weight"] = hf_state[hf + f"mlp.{hf_name}.weight"]
    out["norm.weight"] = hf_state["model.norm.weight"]
    if not config.tie_embeddings:
        out["lm_head.weight"] = hf_state["lm_head.weight"]
    return out


# %% exercise: load_llama_folder
import json
from pathlib import Path

from safetensors.torch import load_file

from buildlm.model import ModelConfig


def load_llama_folder(folder):
    """Your LlamaModel with the weights of a Hugging Face Llama or Qwen3 folder, in eval mode."""
    folder = Path(folder)
    hf = json.loads((folder / "config.json").read_text())
    rope_theta = hf.get("rope_theta") or hf["rope_parameters"]["rope_theta"]
    config = ModelConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf["max_position_embeddings"],
        d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"],
        n_kv_heads=hf["num_key_value_heads"],
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        d_ff=hf["intermediate_size"],
        bias=False,
        norm="rmsnorm",
        norm_eps=hf["rms_norm_eps"],
        position="rope",
        rope_theta=rope_theta,
        mlp="swiglu",
        tie_embeddings=hf.get("tie_word_embeddings", False),
        qk_norm=hf["model_type"] == "qwen3",
    )
    model = LlamaModel(config)
    model.load_state_dict(convert_llama(load_file(folder / "model.safetensors"), config))
    return model.eval()
