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

Both are boolean masks, True = may attend, handed to the explicit path and to PyTorch's SDPA alike.
"""

from __future__ import annotations

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


def layer_masks(
    windows: set[int | None],
    q_len: int,
    offset: int,
    key_mask: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> dict[int | None, torch.Tensor | None]:
    """The attention mask for each window size in ``windows`` (None: global layers).

    None in the result means "plain causal": attention then takes its fastest path. A window
    that covers every key hides nothing beyond causality, so it gets the global layers' mask.
    """
    full = None if key_mask is None else padding_attention_mask(key_mask, q_len, offset)
    k_len = offset + q_len
    masks: dict[int | None, torch.Tensor | None] = {None: full}
    for window in windows - {None}:
        if window >= k_len:
            masks[window] = full
        elif key_mask is None:
            masks[window] = sliding_causal_mask(q_len, k_len, window, device)
        else:
            masks[window] = sliding_padding_mask(key_mask, q_len, offset, window)
    return masks
