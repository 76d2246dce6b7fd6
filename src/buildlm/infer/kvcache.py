"""The key/value cache: why decoding one token need not recompute the whole prefix.

In a causal transformer the keys and values of position t depend only on tokens 0..t, so once
computed they never change. Generating token t+1 only needs the *new* token's query, key and
value; the keys and values of every earlier position can be read from memory. Without a cache
each new token re-runs attention over the whole prefix (O(T^2) work per token); with it a decode
step costs one pass over the weights plus a read of the cache.

`StaticKVCache` preallocates, for every layer, a (B, n_kv_heads, max_len, head_dim) tensor for
keys and one for values, and writes each step's keys/values into the next free slots. Nothing
is reallocated or concatenated while decoding (``torch.cat`` per step would copy the whole cache
every time), and the tensors keep fixed shapes, which is what CUDA graphs need. With grouped-
query attention only the ``n_kv_heads`` shared heads are stored: that is GQA's memory saving.

The model talks to it through the `buildlm.model.attention.KVCache` protocol: ``offset`` (how
many positions are cached) and ``update(layer, k, v)``.
"""

from __future__ import annotations

import torch
from torch import nn


class StaticKVCache:
    """Preallocated per-layer key/value storage for ``batch_size`` sequences of ``max_len``."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if max_len < 1 or batch_size < 1:
            raise ValueError(f"max_len and batch_size must be >= 1, got {max_len}, {batch_size}")
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.n_layers = n_layers
        self.max_len = max_len
        self.offset = 0

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        batch_size: int,
        max_len: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> StaticKVCache:
        """A cache shaped for ``model`` (a `buildlm.model.GPT`), in the dtype its activations have.

        ``max_len`` defaults to the model's context length. The dtype is that of the first
        floating-point parameter (int8-quantized models keep float scales and activations).
        """
        cfg = model.config
        if dtype is None:
            dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
        device = next(model.parameters()).device
        max_len = cfg.context_length if max_len is None else min(max_len, cfg.context_length)
        return cls(cfg.n_layers, batch_size, cfg.kv_heads, cfg.head_dim, max_len, dtype, device)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes held by keys and values together."""
        return 2 * self.k.numel() * self.k.element_size()

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values (B, KV, T_new, d) for ``layer``; return all cached ones.

        The returned tensors are views (B, KV, offset + T_new, d) into the preallocated storage,
        no copy. The offset moves on after the last layer has written, so every layer of one
        forward pass writes to the same slots.
        """
        end = self.offset + k.shape[-2]
        if end > self.max_len:
            raise ValueError(
                f"the KV cache holds {self.max_len} positions and is full ({self.offset} used, "
                f"{k.shape[-2]} more asked); make a larger cache or slide the window"
            )
        self.k[layer, :, :, self.offset : end] = k
        self.v[layer, :, :, self.offset : end] = v
        if layer == self.n_layers - 1:
            self.offset = end
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (B_new,) of the batch, e.g. the surviving beams of beam search."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)

    def reset(self) -> None:
        """Forget everything (the storage is reused; stale values are never read)."""
        self.offset = 0


class SlotWriter:
    """The KV storage of a decode step whose shapes never change (for CUDA graphs).

    `StaticKVCache.update` returns the cached positions so far, so every step hands attention a
    longer key tensor: a different shape each step, which a CUDA graph (a recording of fixed
    kernels on fixed addresses) cannot replay. Here one new position per row is written at
    ``slot``, a one-element device tensor, and attention always gets a layer's whole storage,
    (B, KV, max_len, d). The caller's key mask (B, max_len) marks the slots written so far; to
    the model the new token sits after ``offset = max_len - 1`` cached positions, so its causal
    mask hides nothing and the key mask does all the hiding (see
    `buildlm.model.attention.padding_attention_mask`). Positions come from the caller too.

    Each layer has a tensor of its own (`load` copies a prefilled `StaticKVCache` in): written
    in place through slices of one big tensor, ``torch.compile`` would copy all of it every step.
    """

    def __init__(self, cache: StaticKVCache) -> None:
        self.cache = cache
        self.offset = cache.max_len - 1
        self.slot = torch.zeros(1, dtype=torch.long, device=cache.k.device)
        self.keys = [torch.zeros_like(k) for k in cache.k]  # n_layers x (B, KV, max_len, d)
        self.values = [torch.zeros_like(v) for v in cache.v]

    def load(self) -> None:
        """Take the cache's filled slots (after a prefill); the next write goes after them."""
        filled = self.cache.offset
        for layer in range(self.cache.n_layers):
            self.keys[layer][:, :, :filled] = self.cache.k[layer, :, :, :filled]
            self.values[layer][:, :, :filled] = self.cache.v[layer, :, :, :filled]
        self.slot.fill_(filled)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's (B, KV, 1, d) keys/values at ``slot``; return the whole (B, KV, max_len, d)."""
        keys, values = self.keys[layer], self.values[layer]
        keys.index_copy_(2, self.slot, k)
        values.index_copy_(2, self.slot, v)
        return keys, values
