"""The LoRA side path: a frozen weight and a trainable low-rank detour beside it.

y = x W^T + (alpha / r) · x A^T B^T. The input goes both ways; the detour narrows to r numbers
(A: r × in) and widens back (B: out × r, zero at the start, so training starts from the base
model). After training, B A is added into W ("merge") and the detour disappears.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Polygon, Rectangle


def _arrow(ax, start, end) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="->", mutation_scale=12, color="black"))


def draw() -> Figure:
    """The frozen W on the left, A (narrowing) and B (widening) on the right, summed at the top."""
    fig, ax = plt.subplots(figsize=(7, 4.6))
    ax.add_patch(Rectangle((0.5, 1.6), 3.0, 1.6, facecolor="#bdbdbd", edgecolor="black"))
    ax.text(2.0, 2.4, "W  (out × in)\nfrozen", ha="center", va="center", fontsize=11)
    ax.add_patch(Polygon([(4.5, 1.6), (7.5, 1.6), (6.4, 2.3), (5.6, 2.3)],
                         facecolor="#fdae6b", edgecolor="black"))  # fmt: skip
    ax.text(6.0, 1.85, "A  (r × in)", ha="center", va="center", fontsize=10)
    ax.add_patch(Polygon([(5.6, 2.5), (6.4, 2.5), (7.5, 3.2), (4.5, 3.2)],
                         facecolor="#74c476", edgecolor="black"))  # fmt: skip
    ax.text(6.0, 2.95, "B  (out × r), starts at 0", ha="center", va="center", fontsize=10)
    ax.text(7.7, 2.4, "r numbers", va="center", fontsize=9, style="italic")
    ax.text(4.0, 0.55, "x  (in)", ha="center", va="center", fontsize=12)
    _arrow(ax, (4.0, 0.8), (2.0, 1.55))
    _arrow(ax, (4.0, 0.8), (6.0, 1.55))
    ax.text(4.0, 4.35, "y = x Wᵀ + (α / r) · x Aᵀ Bᵀ   (out)", ha="center", va="center", fontsize=12)
    _arrow(ax, (2.0, 3.25), (3.6, 4.1))
    _arrow(ax, (6.0, 3.25), (4.4, 4.1))
    ax.text(6.0, 3.6, "× α / r", ha="center", fontsize=9)
    ax.text(4.0, -0.3, "trainable: r · (in + out) numbers instead of in · out; "
            "merge: W ← W + (α / r) B A", ha="center", fontsize=9)  # fmt: skip
    ax.set_xlim(0, 9)
    ax.set_ylim(-0.6, 4.8)
    ax.axis("off")
    ax.set_title("LoRA: a low-rank side path beside a frozen layer")
    fig.tight_layout()
    return fig
