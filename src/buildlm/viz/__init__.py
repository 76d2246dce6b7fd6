"""buildlm.viz: pictures of what happens inside a language model, one picture per file.

- ``attention.py``: `plot_attention`, one head's attention weights over a text, as a heatmap;
- ``losses.py``: `plot_loss_curves`, train/val loss against step of one or several runs;
- ``embeddings.py``: `plot_embeddings`, chosen token embeddings projected to 2-D by PCA;
- ``tokens.py``: `plot_tokens`, a text as coloured boxes, one per token (token boundaries);
- ``figure.py``: what they share (figure size, token labels, atomic PNG writing);
- ``explain.py``: a model printed stage by stage (shapes, parameters, FLOPs), in text;
  ``explain_cli.py``: ``buildlm explain``.

Each ``plot_*`` function writes a PNG of ``figsize`` x ``dpi`` pixels to the path given and returns the
matplotlib ``Figure`` (shown inline in Jupyter). Nothing opens a window: figures are drawn on
matplotlib's Agg canvas, so they work on a server or in a test.
"""

from buildlm.viz.attention import attention_matrix, plot_attention
from buildlm.viz.embeddings import pca_2d, plot_embeddings
from buildlm.viz.losses import plot_loss_curves, read_metrics
from buildlm.viz.tokens import layout_tokens, plot_tokens

__all__ = [
    "attention_matrix",
    "layout_tokens",
    "pca_2d",
    "plot_attention",
    "plot_embeddings",
    "plot_loss_curves",
    "plot_tokens",
    "read_metrics",
]
