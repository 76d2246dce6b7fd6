"""Sliding-window (local) attention: each token sees only the last few tokens, itself included.

Full causal attention lets the query at position t read every key 0..t, so its cost and its
key/value cache grow with the text. A *local* layer reads only keys ``t - window + 1 .. t``
(Mistral's and Gemma's definition, Hugging Face's ``kv_idx > q_idx - sliding_window``): the
work per token and the cache a layer needs stay at ``window`` positions however long the text
gets. Information from further back still arrives, one window per layer: after L local layers a
token has heard from up to L x (window - 1) positions back. Gemma 2/3 mix the two kinds (5
local : 1 global in Gemma 3), so a few global layers keep exact long-range recall.

``ModelConfig.layer_types`` says which layers are local; this file builds their masks, one per
forward pass, for every way buildlm calls attention:

- a plain causal pass, with or without cached keys before the new queries: a band of the
  causal mask, query i (at absolute position k_len - q_len + i) sees keys j with
  ``0 <= i_abs - j < window``;
- a left-padded batch (`buildlm.infer.Engine`'s key mask, real tokens marked True): the
  distance between a query and a key is the number of *real* keys between them, so pad slots
  (and the unwritten slots of a fixed-shape decode step) never count toward the window.

- a cache that keeps only the last ``window`` keys of a local layer (a ring buffer,
  `buildlm.infer.kvcache`): its keys come out of order, and the cache's ``key_slots`` says which
  position each one holds; the mask is built from those positions.

All are boolean masks, True = may attend, handed to the explicit path and to PyTorch's SDPA alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from buildlm.model.attention import causal_mask, padding_attention_mask


def sliding_causal_mask(
    q_len: int, k_len: int, window: int, device: torch.device | None = None
) -> torch.Tensor:
    """Boolean (q_len, k_len): query i (the last q_len of k_len positions) sees the ``window``
    keys ending at its own position."""
    causal = causal_mask(q_len, k_len, device)  # j <= i_abs
    too_old = causal_mask(q_len, k_len, device).tril(diagonal=k_len - q_len - window)  # j <= i_abs - window
    return causal & ~too_old


def sliding_padding_mask(
    key_mask: torch.Tensor, q_len: int, offset: int, window: int
) -> torch.Tensor:
    """`padding_attention_mask` restricted to a window: (B, Tk) key_mask -> (B, 1, q_len, Tk).

    Real tokens sit in contiguous slots of a row, so counting real slots gives positions:
    ``seen[j]`` real keys up to slot j, and the query in slot ``offset + i`` is
    ``seen[offset + i] - seen[j]`` real tokens after key j. A query always keeps its own slot
    (distance 0), so no row of the mask becomes empty.
    """
    seen = key_mask.long().cumsum(dim=-1)  # (B, Tk)
    distance = seen[:, offset:, None] - seen[:, None, :]  # (B, Tq, Tk)
    near = (distance < window)[:, None]  # (B, 1, Tq, Tk)
    return padding_attention_mask(key_mask, q_len, offset) & near


def ring_mask(
    key_slots: torch.Tensor,
    q_len: int,
    offset: int,
    window: int,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mask for keys that sit at positions ``key_slots`` (Tk,), negative = empty slot:
    (1 or B, 1, q_len, Tk). The queries are positions ``offset ..``; ``key_mask`` (B, offset +
    q_len) marks the real positions, and distances count real ones, as in `sliding_padding_mask`.
    """
    q = offset + torch.arange(q_len, device=key_slots.device)[:, None]  # (Tq, 1)
    k = key_slots.clamp(min=0)  # (Tk,) a position to look up, for empty slots too
    allowed = (key_slots >= 0) & (k <= q)  # (Tq, Tk)
    if key_mask is None:
        return (allowed & (q - k < window))[None, None]  # (1, 1, Tq, Tk)
    seen = key_mask.long().cumsum(dim=-1)  # (B, offset + Tq) real positions up to each one
    distance = seen[:, q[:, 0], None] - seen[:, None, k]  # (B, Tq, Tk)
    allowed = allowed[None] & key_mask[:, None, k] & (distance < window)  # (B, Tq, Tk)
    own = (key_slots == q)[None]  # (1, Tq, Tk): a pad query with nothing to see sees itself
    empty = ~allowed.any(dim=-1, keepdim=True)
    return (allowed | (own & empty))[:, None]


def layer_masks(
    windows: set[int | None],
    q_len: int,
    offset: int,
    key_mask: torch.Tensor | None = None,
    device: torch.device | None = None,
    key_slots: Callable[[int, int], torch.Tensor | None] | None = None,
) -> dict[int | None, torch.Tensor | None]:
    """The attention mask for each window size in ``windows`` (None: global layers).

    None in the result means "plain causal": attention then takes its fastest path. A window
    that covers every key hides nothing beyond causality, so it gets the global layers' mask.
    ``key_slots(window, q_len)`` is the cache's (None when it has no rings).
    """
    full = None if key_mask is None else padding_attention_mask(key_mask, q_len, offset)
    k_len = offset + q_len
    masks: dict[int | None, torch.Tensor | None] = {None: full}
    for window in windows - {None}:
        slots = None if key_slots is None else key_slots(window, q_len)
        if slots is not None:  # a ring: its keys are out of order
            masks[window] = ring_mask(slots, q_len, offset, window, key_mask)
        elif window >= k_len:
            masks[window] = full
        elif key_mask is None:
            masks[window] = sliding_causal_mask(q_len, k_len, window, device)
        else:
            masks[window] = sliding_padding_mask(key_mask, q_len, offset, window)
    return masks
