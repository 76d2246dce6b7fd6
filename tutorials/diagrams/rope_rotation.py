"""Rotary positions (RoPE): a position turns each pair of a query's or key's numbers by an angle.

Pair i of a head's vector is read as a point in the plane and turned by ``position * f_i``,
where the frequencies ``f_i = theta ** (-2i / head_dim)`` go from one radian per position for
the first pair to almost nothing for the last. The left panel follows one pair of a query at
positions 0..5; the right panel shows why this encodes *relative* position: the query at
position m and the key at position n are both turned, so the angle between them, and with it
their dot product, depends only on m - n.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

FREQUENCY = 0.5  # radians per position, for one pair


def _arrow(ax, angle: float, colour: str, label: str, length: float = 1.0) -> None:
    x, y = length * math.cos(angle), length * math.sin(angle)
    ax.annotate("", xy=(x, y), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": colour})
    ax.text(1.12 * x, 1.12 * y, label, color=colour, ha="center", va="center", fontsize=8)


def draw() -> Figure:
    """Two panels: one pair turning with position, and a query-key pair keeping its angle."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.2))
    for p in range(6):
        _arrow(left, p * FREQUENCY, plt.cm.viridis(p / 6), f"pos {p}")
    left.set_title(f"one pair of a query, turned by position x {FREQUENCY} rad")
    for (m, n), colour in (((2, 0), "#d62728"), ((5, 3), "#1f77b4")):
        _arrow(right, m * FREQUENCY, colour, f"q at {m}")
        _arrow(right, n * FREQUENCY, colour, f"k at {n}", length=0.7)
    right.set_title("m - n = 2 in both: the same angle, the same score")
    for ax in (left, right):
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="lightgray"))
        ax.set_xlim(-1.35, 1.35)
        ax.set_ylim(-1.35, 1.35)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle("Rotary position embedding (RoPE): positions as rotations of query/key pairs")
    fig.tight_layout()
    return fig
