"""The KV cache filling up: what each decoding step computes, and what it reads back.

Four panels, one per step: the prefill writes the prompt's keys and values into the first
slots; every later step computes the query, key and value of one new token only, appends the
key and value, and its query attends over every filled slot. Without a cache, step n would
recompute all n rows again.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

PROMPT = 4  # tokens in the prompt
SLOTS = 8  # the cache's length (max_len)


def draw() -> Figure:
    """Four steps of cached decoding as rows of cache slots."""
    steps = [("prefill: the prompt, 4 tokens at once", PROMPT, PROMPT)]
    steps += [(f"decode step {i}: 1 new token", PROMPT + i, 1) for i in (1, 2, 3)]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for row, (title, filled, new) in enumerate(steps):
        y = 3 - row
        ax.text(-0.3, y + 0.4, title, ha="right", va="center", fontsize=9)
        for slot in range(SLOTS):
            if slot < filled - new:
                colour, label = "#9ecae1", "read"  # kept from earlier steps
            elif slot < filled:
                colour, label = "#fd8d3c", "new"  # computed and written now
            else:
                colour, label = "white", ""
            ax.add_patch(Rectangle((slot, y), 0.9, 0.8, facecolor=colour, edgecolor="gray"))
            if label:
                ax.text(slot + 0.45, y + 0.4, f"k,v\n{slot}", ha="center", va="center", fontsize=7)
        ax.annotate("", xy=(filled - 0.05, y + 0.4), xytext=(SLOTS + 0.6, y + 0.4),
                    arrowprops={"arrowstyle": "->", "color": "black"})  # fmt: skip
        ax.text(SLOTS + 0.7, y + 0.4, f"query {filled - 1} reads slots 0..{filled - 1}",
                va="center", fontsize=8)  # fmt: skip
    ax.add_patch(Rectangle((0, -0.9), 0.6, 0.4, facecolor="#fd8d3c", edgecolor="gray"))
    ax.text(0.7, -0.7, "computed this step", va="center", fontsize=8)
    ax.add_patch(Rectangle((3.2, -0.9), 0.6, 0.4, facecolor="#9ecae1", edgecolor="gray"))
    ax.text(3.9, -0.7, "read back from the cache", va="center", fontsize=8)
    ax.add_patch(Rectangle((6.7, -0.9), 0.6, 0.4, facecolor="white", edgecolor="gray"))
    ax.text(7.4, -0.7, "empty slot", va="center", fontsize=8)
    ax.set_xlim(-4.6, SLOTS + 4.5)
    ax.set_ylim(-1.1, 4.0)
    ax.axis("off")
    ax.set_title("A KV cache filling up: one layer's keys and values, slot = position")
    fig.tight_layout()
    return fig
