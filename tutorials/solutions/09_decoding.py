"""Worked answers for tutorials/09_decoding.ipynb, one section per exercise.

Load one into its cell with ``%load -s NAME solutions/09_decoding.py``.
"""

# %% exercise: my_top_k
import torch


def my_top_k(logits, k):
    """Keep the k largest logits of each row of ``logits`` (B, V); set the others to -inf."""
    kth_largest = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return torch.where(logits < kth_largest, torch.full_like(logits, float("-inf")), logits)


# %% exercise: my_top_p
def my_top_p(logits, p):
    """Nucleus filter on ``logits`` (B, V): keep the most likely tokens until their mass reaches p."""
    probs = logits.softmax(dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V): mass of more likely tokens
    keep_sorted = mass_before < p
    keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)  # back to vocabulary order
    return logits.masked_fill(~keep, float("-inf"))


# %% exercise: my_generate
def my_generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None):
    """Extend ``idx`` (B, T) by ``max_new_tokens`` tokens; return (B, T + max_new_tokens)."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    context = model.config.context_length
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(idx[:, -context:])[:, -1, :].float()  # (B, V)
            if temperature == 0:
                next_ids = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    logits = my_top_k(logits, top_k)
                if top_p is not None:
                    logits = my_top_p(logits, top_p)
                next_ids = torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=generator)
            idx = torch.cat([idx, next_ids], dim=1)
    return idx


# %% exercise: kv_cache
class KVCache:
    """The keys and values one attention layer has computed so far, each (B, heads, T, head_dim)."""

    def __init__(self):
        self.k = self.v = None

    def __len__(self):
        return 0 if self.k is None else self.k.shape[2]

    def update(self, k, v):
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        return self.k, self.v


# %% exercise: causal_self_attention
import math

from torch import nn


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused ``qkv`` layer and an output ``proj``."""

    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x, cache=None):
        B, T, d = x.shape
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
                   for t in self.qkv(x).split(d, dim=2))  # each (B, h, T, hd)  # fmt: skip
        past = 0
        if cache is not None:
            past = len(cache)
            k, v = cache.update(k, v)  # (B, h, past + T, hd)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, h, T, past + T)
        query_pos = torch.arange(past, past + T)[:, None]
        key_pos = torch.arange(past + T)[None, :]
        scores = scores.masked_fill(key_pos > query_pos, float("-inf"))  # no peeking ahead
        out = scores.softmax(dim=-1) @ v  # (B, h, T, hd)
        return self.proj(out.transpose(1, 2).reshape(B, T, d))


# %% exercise: generate_cached
def generate_cached(model, idx, max_new_tokens):
    """Greedy continuation of ``idx`` (1, T) with ``model`` (a CachedGPT) and fresh KV caches."""
    caches = [KVCache() for _ in model.blocks]
    pieces = [idx]
    with torch.no_grad():
        logits = model(idx, caches)[:, -1]  # prefill: the whole prompt once
        for step in range(max_new_tokens):
            next_id = logits.argmax(dim=-1, keepdim=True)  # (1, 1)
            pieces.append(next_id)
            if step < max_new_tokens - 1:
                logits = model(next_id, caches)[:, -1]  # only the newest token goes in
    return torch.cat(pieces, dim=1)
