"""The multi-head reshape: one (T, d_model) matrix cut into H slices of head_dim features.

Left: the queries of one sequence, T rows (tokens) by d_model columns, coloured by the head
each column belongs to. Middle: ``view(T, H, head_dim).transpose`` makes H separate
(T, head_dim) matrices, one per head, that attend on their own. Right: ``transpose`` back and
``reshape(T, d_model)`` puts the heads' outputs side by side again, in the same columns.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]


def _grid(ax, x0: float, y0: float, rows: int, cols: int, colour_of, cell: float = 0.3) -> None:
    """Draw rows x cols cells with their lower-left corner at (x0, y0); row 0 on top."""
    for r in range(rows):
        for c in range(cols):
            y = y0 + (rows - 1 - r) * cell
            ax.add_patch(Rectangle((x0 + c * cell, y), cell, cell, facecolor=colour_of(c),
                                   edgecolor="white", linewidth=0.8))  # fmt: skip


def _arrow(ax, x0: float, x1: float, y: float, text: str) -> None:
    ax.add_patch(FancyArrowPatch((x0, y), (x1, y), arrowstyle="-|>", mutation_scale=14))
    ax.text((x0 + x1) / 2, y - 0.2, text, ha="center", va="top", fontsize=8, family="monospace")


def draw(T: int = 5, n_heads: int = 4, head_dim: int = 3) -> Figure:
    """The reshape for T tokens, n_heads heads of head_dim features each."""
    cell = 0.3
    d_model = n_heads * head_dim
    fig = Figure(figsize=(11, 2.8))
    ax = fig.add_subplot()
    width = d_model * cell
    height = T * cell

    _grid(ax, 0, 0, T, d_model, lambda c: COLOURS[c // head_dim % len(COLOURS)])
    ax.text(width / 2, height + 0.2, f"q: (T={T}, d_model={d_model})", ha="center", fontsize=9)

    x_heads = width + 2.2
    gap = 0.35
    for h in range(n_heads):
        x = x_heads + h * (head_dim * cell + gap)
        _grid(ax, x, 0, T, head_dim, lambda c, h=h: COLOURS[h % len(COLOURS)])
        ax.text(x + head_dim * cell / 2, height + 0.2, f"head {h}", ha="center", fontsize=8)
    heads_end = x_heads + n_heads * (head_dim * cell + gap) - gap
    ax.text((x_heads + heads_end) / 2, -0.45,
            f"(H={n_heads}, T, head_dim={head_dim}): each head attends on its own",
            ha="center", fontsize=8)  # fmt: skip
    _arrow(ax, width + 0.2, x_heads - 0.2, height / 2, "view(T, H, hd)\n.transpose(0, 1)")

    x_out = heads_end + 2.2
    _grid(ax, x_out, 0, T, d_model, lambda c: COLOURS[c // head_dim % len(COLOURS)])
    ax.text(x_out + width / 2, height + 0.2, "heads side by side: (T, d_model)", ha="center",
            fontsize=9)  # fmt: skip
    _arrow(ax, heads_end + 0.2, x_out - 0.2, height / 2, ".transpose(0, 1)\n.reshape(T, d)")

    ax.set_xlim(-0.3, x_out + width + 0.3)
    ax.set_ylim(-0.8, height + 0.7)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("Multi-head attention: cutting d_model into heads and gluing them back", fontsize=10)
    return fig
