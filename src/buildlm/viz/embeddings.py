"""Token embeddings projected to 2-D: which tokens the model keeps close together.

The token embedding is a (vocab_size, d_model) table; row i is the vector token i starts as.
A trained model places tokens that behave alike (" king" and " queen", digits, punctuation)
near each other. d_model dimensions cannot be drawn, so we project the chosen rows onto the
two directions along which *they* vary most: principal component analysis (PCA).

PCA, written out (`pca_2d`):

1. centre the vectors: X (N, d) minus its mean row, so the directions describe differences;
2. singular value decomposition X = U S V^T: the rows of V^T are orthogonal directions ordered
   by how much of X's variance lies along them (variance along row j is S_j^2 / N);
3. the coordinates are X projected on the first two rows: X @ V^T[:2].T, shape (N, 2).

Each direction is defined only up to its sign (v and -v describe the same axis), so the sign
is fixed by convention: the largest component of each direction is positive. The share of the
variance each axis explains, S_j^2 / sum(S^2), is printed on it: if the two axes explain little,
the picture flattens much of the structure away.

A model with random weights gives a meaningless cloud; the picture is worth drawing after
training, or for pretrained GPT-2.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from buildlm.model import GPT
from buildlm.viz.figure import new_figure, save_png, token_label


def pca_2d(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project (N, d) vectors onto their two main directions.

    Returns ``(coords (N, 2), explained (2,))``: the coordinates and the share of the variance
    each direction explains. Computed in float64 with a full SVD (exact, unlike the randomised
    ``torch.pca_lowrank``); fine for the few hundred points a picture holds.
    """
    if vectors.dim() != 2 or vectors.shape[0] < 2 or vectors.shape[1] < 2:
        raise ValueError(
            f"PCA needs at least 2 vectors of at least 2 dimensions, got shape {tuple(vectors.shape)}"
        )
    x = vectors.detach().to("cpu", torch.float64)
    centred = x - x.mean(dim=0, keepdim=True)  # (N, d)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (min(N, d), d)
    directions = vh[:2]  # (2, d)
    biggest = directions.abs().argmax(dim=1)  # (2,)
    signs = torch.sign(directions[torch.arange(2), biggest])
    directions = directions * signs[:, None]  # the largest component of each is positive
    coords = centred @ directions.T  # (N, 2)
    variance = s**2
    total = variance.sum()
    explained = variance[:2] / total if total > 0 else torch.zeros(2, dtype=torch.float64)
    return coords, explained


def token_ids(tokenizer: object | None, tokens: Sequence[str | int]) -> list[int]:
    """Ids of the chosen tokens: ints are ids already; each string must be exactly one token."""
    ids = []
    for token in tokens:
        if not isinstance(token, str):
            ids.append(operator.index(token))  # an int, a numpy int, a 0-d tensor
            continue
        if tokenizer is None:
            raise ValueError(f"{token!r} is text; pass a tokenizer, or give token ids")
        encoded = tokenizer.encode(token, allowed_special="all")
        if len(encoded) != 1:
            pieces = [tokenizer.decode([i]) for i in encoded]
            raise ValueError(
                f"{token!r} is {len(encoded)} tokens {pieces}, not one; choose strings that are "
                "single tokens (with GPT-2's tokenizer a word usually needs its leading space, "
                "' king'), or pass token ids"
            )
        ids.append(encoded[0])
    return ids


def plot_embeddings(
    model: GPT,
    tokenizer: object | None,
    tokens: Sequence[str | int],
    path: str | os.PathLike,
    *,
    figsize: tuple[float, float] = (6.0, 6.0),
    dpi: float = 100,
) -> Figure:
    """Scatter the chosen tokens' embedding vectors in their 2-D PCA projection; write a PNG.

    ``tokens`` are strings (each one token of ``tokenizer``) or token ids. Returns the figure;
    the coordinates are ``fig.axes[0].collections[0].get_offsets()``, in the order given.
    """
    ids = token_ids(tokenizer, tokens)
    vocab = model.tok_emb.weight.shape[0]
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(f"token id {bad[0]} is outside the model's vocabulary (0..{vocab - 1})")
    vectors = model.tok_emb.weight[ids]  # (N, d_model)
    coords, explained = pca_2d(vectors)  # (N, 2), (2,)

    fig = new_figure(figsize, dpi)
    ax = fig.add_subplot()
    ax.scatter(coords[:, 0].numpy(), coords[:, 1].numpy(), s=18, color="C0")
    for (x, y), token_id, token in zip(coords.tolist(), ids, tokens, strict=True):
        label = token_label(tokenizer, token_id) if tokenizer is not None else str(token)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=9)
    ax.set_xlabel(f"principal component 1 ({explained[0]:.0%} of the variance)")
    ax.set_ylabel(f"principal component 2 ({explained[1]:.0%} of the variance)")
    ax.set_title(f"token embeddings of {len(ids)} tokens, PCA to 2-D")
    ax.axhline(0, color="gray", linewidth=0.5)
    ax.axvline(0, color="gray", linewidth=0.5)
    save_png(fig, path)
    return fig
