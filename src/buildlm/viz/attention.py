"""Attention heatmap: where one head of one layer looks, for every token of a text.

Row q of the picture is query position q; column k is key position k; the colour is the
attention weight softmax(q . k / sqrt(d)) that q gives to k. Each row sums to 1 (it is a
probability distribution over the keys) and everything right of the diagonal is 0, because
attention is causal: a token never sees the tokens after it. Patterns to look for: a bright
diagonal (a head that looks at the token itself), the sub-diagonal (the previous token), a bright
first column (the first token as a "sink" when a head has nothing useful to attend to).

The weights come from `GPT.get_attention_weights`, which runs the explicit attention formula
whatever the model's config says, so they are exactly what the model computes.
"""

from __future__ import annotations

import os

import torch
from matplotlib.figure import Figure

from buildlm.model import GPT
from buildlm.viz.figure import new_figure, save_png, token_label


def attention_matrix(model: GPT, ids: list[int], layer: int, head: int) -> torch.Tensor:
    """One head's attention weights over ``ids``: a (T, T) float32 tensor on the CPU."""
    cfg = model.config
    if not 0 <= layer < cfg.n_layers:
        raise ValueError(
            f"layer {layer} does not exist; the model has layers 0..{cfg.n_layers - 1}"
        )
    if not 0 <= head < cfg.n_heads:
        raise ValueError(f"head {head} does not exist; the model has heads 0..{cfg.n_heads - 1}")
    if not ids:
        raise ValueError("the text is empty; there is nothing to attend to")
    if len(ids) > cfg.context_length:
        raise ValueError(
            f"{len(ids)} tokens exceed the context length {cfg.context_length}; use a shorter text"
        )
    idx = torch.tensor([ids], device=model.device)  # (1, T)
    with torch.no_grad():
        weights = model.get_attention_weights(idx)  # n_layers x (1, n_heads, T, T)
    return weights[layer][0, head].float().cpu()  # (T, T)


def plot_attention(
    model: GPT,
    tokenizer: object,
    text: str,
    path: str | os.PathLike,
    *,
    layer: int = 0,
    head: int = 0,
    max_tokens: int = 48,
    figsize: tuple[float, float] = (7.0, 6.0),
    dpi: float = 100,
) -> Figure:
    """Draw the attention of ``head`` in ``layer`` over the tokens of ``text``; write a PNG.

    Only the last ``max_tokens`` tokens are drawn: a T x T grid with more labels than that is
    unreadable. The tokens label both axes. Returns the figure; the matrix itself is
    ``fig.axes[0].images[0].get_array()``.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    ids = tokenizer.encode(text, allowed_special="all")[-max_tokens:]
    matrix = attention_matrix(model, ids, layer, head).numpy()  # (T, T)
    labels = [token_label(tokenizer, i) for i in ids]

    fig = new_figure(figsize, dpi)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    fontsize = max(4.0, min(10.0, 260 / len(ids)))
    ax.set_xticks(range(len(ids)), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(ids)), labels, fontsize=fontsize)
    ax.set_xlabel("key: the token attended to")
    ax.set_ylabel("query: the token attending")
    ax.set_title(f"attention, layer {layer}, head {head}")
    fig.colorbar(image, ax=ax, label="weight (each row sums to 1)", shrink=0.8)
    save_png(fig, path)
    return fig
