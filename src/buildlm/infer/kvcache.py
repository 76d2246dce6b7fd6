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

**Local layers keep only their window.** A sliding-window layer (`buildlm.model.sliding_window`)
never again reads a key older than its window, so its storage is a *ring* of ``window`` slots:
absolute position ``a`` lives in slot ``a % window``, each new key overwrites the oldest, and
decoding a long text with a windowed model holds ``window`` positions per local layer instead of
``max_len``. The ring's slots are out of order, which attention does not mind (keys carry their
RoPE rotation, and softmax sums over keys in any order); only the mask must know which
position each slot holds, and `key_slots` tells it.

The model talks to it through the `buildlm.model.attention.KVCache` protocol: ``offset`` (how
many positions are cached), ``update(layer, k, v)`` and, for the rings, ``key_slots``. A batch whose rows come and go (the
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
        windows: Sequence[int | None] | None = None,
    ) -> None:
        if max_len < 1 or batch_size < 1:
            raise ValueError(f"max_len and batch_size must be >= 1, got {max_len}, {batch_size}")
        self.windows = list(windows) if windows is not None else [None] * n_layers
        if len(self.windows) != n_layers:
            raise ValueError(f"{len(self.windows)} windows for {n_layers} layers")
        # Slots per layer: a ring of `window` for a local layer whose window is shorter than max_len.
        self.sizes = [max_len if w is None else min(w, max_len) for w in self.windows]
        shapes = [(batch_size, n_kv_heads, size, head_dim) for size in self.sizes]
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for shape in shapes]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for shape in shapes]
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
        windows = [cfg.layer_window(i) for i in range(cfg.n_layers)]
        return cls(
            cfg.n_layers, batch_size, cfg.n_kv_heads, cfg.head_dim, max_len, dtype, device, windows
        )

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
        t = k.shape[-2]
        end = self.offset + t
        if end > self.max_len:
            raise ValueError(
                f"the KV cache holds {self.max_len} positions and is full ({self.offset} used, "
                f"{t} more asked); make a larger cache or slide the window"
            )
        keys, values = self.k[layer], self.v[layer]
        size = self.sizes[layer]
        if size == self.max_len:  # a full-length layer: positions in order
            keys[:, :, self.offset : end] = k
            values[:, :, self.offset : end] = v
            out = keys[:, :, :end], values[:, :, :end]
        else:  # a ring: see key_slots for the order of what is returned
            if t > 1:  # the chunk's queries see the ring as it was, then the whole chunk
                out = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
            keep = min(t, size)  # only the chunk's last `size` keys stay
            slots = torch.arange(end - keep, end, device=keys.device) % size
            keys[:, :, slots] = k[:, :, t - keep :]
            values[:, :, slots] = v[:, :, t - keep :]
            if t == 1:
                out = keys, values
        if layer == self.n_layers - 1:
            self.offset = end
        return out

    def key_slots(self, window: int | None, q_len: int) -> torch.Tensor | None:
        """Where each key that `update` returns to a ``window`` layer sits, for ``q_len`` new
        queries: (Tk,) absolute positions, negative for a ring slot not written yet. None: the
        layer keeps every position in order (slot j holds position j), no ring.

        Read before the forward pass (at the current ``offset``). One new query: the ring after
        the write, slot s holding the newest position ``a <= offset`` with ``a % window == s``.
        Several: the ring as it was, then the chunk's positions.
        """
        if window is None or window >= self.max_len:
            return None
        if q_len == 1:
            return ring_positions(torch.tensor(self.offset, device=self.device), window)
        before = ring_positions(torch.tensor(self.offset - 1, device=self.device), window)
        chunk = torch.arange(self.offset, self.offset + q_len, device=self.device)
        return torch.cat([before, chunk])

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (B_new,) of the batch, e.g. the surviving beams of beam search."""
        self.k = [t.index_select(0, index) for t in self.k]
        self.v = [t.index_select(0, index) for t in self.v]

    def reset(self) -> None:
        """Forget everything (the storage is reused; stale values are never read)."""
        self.offset = 0

    def truncate(self, length: int) -> None:
        """Forget every position from ``length`` on: what speculative decoding does with the
        drafted tokens the target rejected (`buildlm.infer.speculative`). The slots stay
        written but are past ``offset``, so they are never read and the next step overwrites
        them. A ring (a sliding-window layer) has overwritten older keys with the rejected
        ones, so it cannot go back: refused.
        """
        if any(size != self.max_len for size in self.sizes):
            raise ValueError("a sliding-window cache (a ring of slots) cannot be rolled back")
        if not 0 <= length <= self.offset:
            raise ValueError(f"cannot truncate a cache of {self.offset} positions to {length}")
        self.offset = length

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
        for layer in range(self.n_layers):
            out._copy_positions(layer, self, slice(None), drop, self.offset, -drop)
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
            for layer in range(out.n_layers):
                out._copy_positions(layer, c, rows, 0, c.offset, width - c.offset)
            row += c.batch_size
        out.offset = width
        return out

    def _copy_positions(
        self, layer: int, src: StaticKVCache, rows: slice, start: int, end: int, shift: int
    ) -> None:
        """Copy ``src``'s positions ``start..end`` of ``layer`` into rows ``rows`` of this
        cache, at positions moved by ``shift``; a ring layer only needs its last window."""
        window = self.windows[layer]
        if window is not None:
            start = max(start, end - window)
        if src.sizes[layer] == src.max_len and self.sizes[layer] == self.max_len:  # in order
            src_slots, dst_slots = slice(start, end), slice(start + shift, end + shift)
        else:  # a ring on either side: position a sits in slot a % size
            positions = torch.arange(start, end, device=self.device)
            src_slots = positions % src.sizes[layer]
            dst_slots = (positions + shift) % self.sizes[layer]
        for dst, source in ((self.k, src.k), (self.v, src.v)):  # (B, KV, slots, d)
            dst[layer][rows, :, dst_slots] = source[layer][:, :, src_slots]

    def _new(self, batch_size: int, max_len: int) -> StaticKVCache:
        """An empty cache like this one (layers, heads, dtype, device, windows) of another size."""
        _, kv_heads, _, head_dim = self.k[0].shape
        dtype, device = self.k[0].dtype, self.k[0].device
        return StaticKVCache(
            self.n_layers, batch_size, kv_heads, head_dim, max_len, dtype, device, self.windows
        )


def ring_positions(last: torch.Tensor, size: int) -> torch.Tensor:
    """The position each slot of a ring of ``size`` holds once positions up to ``last`` (a
    0-d or (1,) tensor) are written: (size,), negative where nothing was written yet."""
    slots = torch.arange(size, device=last.device)
    return last - torch.remainder(last - slots, size)


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
        """Write this step's (B, KV, 1, d) keys/values at ``slot`` (of a ring: ``slot % size``);
        return the layer's whole storage, (B, KV, max_len or ring size, d)."""
        keys, values = self.cache.k[layer], self.cache.v[layer]
        size = self.cache.sizes[layer]
        slot = self.slot if size == self.cache.max_len else torch.remainder(self.slot, size)
        keys.index_copy_(2, slot, k)
        values.index_copy_(2, slot, v)
        return keys, values

    def key_slots(self, window: int | None, q_len: int) -> torch.Tensor | None:
        """As `StaticKVCache.key_slots` for the new token at ``slot``, on the device (no host
        read, so a CUDA graph can record it)."""
        if window is None or window >= self.cache.max_len:
            return None
        return ring_positions(self.slot, window)
