"""What every picture in `buildlm.viz` shares: a figure of a given size, token labels, a PNG.

The figures are built with ``matplotlib.figure.Figure`` and its Agg canvas directly, not with
``pyplot``: no window is opened, no global "current figure" is kept (a loop drawing a thousand
heatmaps leaks nothing), and it works on a server with no display. Jupyter still shows a
returned ``Figure`` inline.

A PNG is ``figsize`` inches times ``dpi`` pixels per inch, exactly: the figure is saved whole
(no ``bbox_inches="tight"`` cropping), and the layout engine fits the contents inside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from buildlm.atomic import atomic_file

# How invisible characters show in token labels: a token is a run of bytes, and whether it
# starts with a space (" world" vs "world") is exactly what a learner needs to see.
VISIBLE = str.maketrans({" ": "\u00b7", "\n": "\u21b5", "\t": "\u2192"})  # · ↵ →


def token_label(tokenizer: object, token_id: int) -> str:
    """The text of one token with spaces, newlines and tabs made visible (· ↵ →).

    Decoded on its own, so a piece of a multi-byte character shows as U+FFFD, as it should.
    """
    text = tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")
    return text.translate(VISIBLE)


def new_figure(
    figsize: tuple[float, float], dpi: float, layout: str | None = "constrained"
) -> Figure:
    """An empty figure on an Agg canvas: ``figsize`` (width, height) in inches, ``dpi``."""
    if len(figsize) != 2 or min(figsize) <= 0:
        raise ValueError(f"figsize must be (width, height) in inches, both > 0, got {figsize!r}")
    if dpi <= 0:
        raise ValueError(f"dpi must be positive, got {dpi!r}")
    fig = Figure(figsize=figsize, dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as a PNG of exactly figsize x dpi pixels, atomically.

    The image goes to a temporary name beside ``path`` and is renamed into place
    (`buildlm.atomic.atomic_file`), so a crash never leaves half a PNG under the final name.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; give a file name such as attn.png")
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return path
