"""The key/value cache: why decoding one token need not recompute the whole prefix.

In a causal transformer the keys and values of position t depend only on tokens 0..t, so once
computed they never change. Generating token t+1 only needs the *new* token's query, key and
value; the keys and values of every earlier position can be read from memory. Without a cache
each new token re-runs attention over the whole prefix (O(T^2) work per token); with it a decode
step costs one pass over the weights plus a read of the cache.

`StaticKVCache` preallocates, for every layer, a (B, n_kv_heads, max_len, head_dim) tensor for
keys and one for values (a tensor of its own per layer: written in place through slices of one
big tensor, ``torch.compile`` would copy all of it at every step), and writes each step's
keys/values into the next free slots. Nothing is reallocated or concatenated while decoding
(``torch.cat`` per step would copy the whole cache every time), and the tensors keep fixed
shapes, which is what CUDA graphs need. With grouped-query attention only the ``n_kv_heads``
shared heads are stored: that is GQA's memory saving.

The model talks to it through the `buildlm.model.attention.KVCache` protocol: ``offset`` (how
many positions are cached) and ``update(layer, k, v)``. A batch whose rows come and go (the
server's) moves rows between caches with ``reorder``, ``resized`` and ``concat``.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.device = torch.device(device)
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
        return cls(cfg.n_layers, batch_size, cfg.n_kv_heads, cfg.head_dim, max_len, dtype, device)

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes held by keys and values together."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

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
        self.k[layer][:, :, self.offset : end] = k
        self.v[layer][:, :, self.offset : end] = v
        if layer == self.n_layers - 1:
            self.offset = end
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (B_new,) of the batch, e.g. the surviving beams of beam search."""
        self.k = [t.index_select(0, index) for t in self.k]
        self.v = [t.index_select(0, index) for t in self.v]

    def reset(self) -> None:
        """Forget everything (the storage is reused; stale values are never read)."""
        self.offset = 0

    # --- cache surgery for a batch whose rows come and go (`buildlm.infer.batch`) ---
    #
    # Rows of a batch sit *right-aligned*: every row's newest key is in slot ``offset - 1``, and
    # the slots left of a shorter row are padding its key mask hides. These copies keep that.

    def resized(self, max_len: int, drop: int = 0) -> StaticKVCache:
        """A new cache of ``max_len`` positions holding this one's, less its first ``drop`` slots.

        Dropping slots that are padding in every row (the shared left padding) changes nothing
        a row computes: its keys keep their order, and each row carries its own positions.
        """
        kept = self.offset - drop
        out = self._new(self.batch_size, max_len)
        for dst, src in zip(out.k + out.v, self.k + self.v, strict=True):  # (B, KV, slots, d)
            dst[:, :, :kept] = src[:, :, drop : self.offset]
        out.offset = kept
        return out

    @classmethod
    def concat(cls, caches: Sequence[StaticKVCache], max_len: int) -> StaticKVCache:
        """The rows of ``caches`` one after another in one cache of ``max_len`` positions.

        Each cache's ``offset`` slots are copied right-aligned to the widest one's: with widths
        ``w_i`` and ``w = max(w_i)``, cache i's rows fill slots ``[w - w_i, w)``.
        """
        width = max(c.offset for c in caches)
        out = caches[0]._new(sum(c.batch_size for c in caches), max_len)
        row = 0
        for c in caches:
            rows = slice(row, row + c.batch_size)
            for dst, src in zip(out.k + out.v, c.k + c.v, strict=True):  # (B, KV, slots, d)
                dst[rows, :, width - c.offset : width] = src[:, :, : c.offset]
            row += c.batch_size
        out.offset = width
        return out

    def _new(self, batch_size: int, max_len: int) -> StaticKVCache:
        """An empty cache like this one (layers, heads, dtype, device) of another size."""
        _, kv_heads, _, head_dim = self.k[0].shape
        dtype, device = self.k[0].dtype, self.k[0].device
        return StaticKVCache(self.n_layers, batch_size, kv_heads, head_dim, max_len, dtype, device)


class SlotWriter:
    """A `StaticKVCache` as a decode step whose shapes never change sees it (for CUDA graphs).

    `StaticKVCache.update` returns the cached positions so far, so every step hands attention a
    longer key tensor: a different shape each step, which a CUDA graph (a recording of fixed
    kernels on fixed addresses) cannot replay. Here one new position per row is written at
    ``slot``, a one-element device tensor, and attention always gets a layer's whole storage,
    (B, KV, max_len, d). The caller's key mask (B, max_len) marks the slots written so far; to
    the model the new token sits after ``offset = max_len - 1`` cached positions, so its causal
    mask hides nothing and the key mask does all the hiding (see
    `buildlm.model.attention.padding_attention_mask`). Positions come from the caller too.
    """

    def __init__(self, cache: StaticKVCache) -> None:
        self.cache = cache
        self.offset = cache.max_len - 1
        self.slot = torch.zeros(1, dtype=torch.long, device=cache.device)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's (B, KV, 1, d) keys/values at ``slot``; return the whole (B, KV, max_len, d)."""
        keys, values = self.cache.k[layer], self.cache.v[layer]
        keys.index_copy_(2, self.slot, k)
        values.index_copy_(2, self.slot, v)
        return keys, values
