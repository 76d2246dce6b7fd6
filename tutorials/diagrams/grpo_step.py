"""One GRPO step for one prompt: a group of sampled completions, a verifier, group advantages.

The policy samples G completions of the same prompt; a verifier scores each (1 for the right
answer, a small bonus for the requested form); each reward is compared with the group's mean
(and std): the advantage. The loss pushes up the tokens of completions above the mean and down
those below; a group whose rewards are all equal gives 0 advantage and no gradient.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# An example group of four (rewards with a 0.1 format bonus, advantages: (r - mean) / std).
COMPLETIONS = ["#### 7", "#### 5", "7", "#### 7"]
REWARDS = [1.1, 0.1, 0.0, 1.1]


def _arrow(ax, start, end) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="->", mutation_scale=12, color="black"))


def _box(ax, x, y, w, h, text, color, fontsize=10) -> None:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", facecolor=color,
                                edgecolor="black"))  # fmt: skip
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def draw() -> Figure:
    """Prompt -> policy -> G completions -> verifier rewards -> advantages -> loss."""
    mean = sum(REWARDS) / len(REWARDS)
    std = (sum((r - mean) ** 2 for r in REWARDS) / (len(REWARDS) - 1)) ** 0.5
    advantages = [(r - mean) / std for r in REWARDS]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    _box(ax, 0.0, 2.0, 1.3, 0.6, "prompt\n\"3+4=\"", "#deebf7")
    _box(ax, 1.8, 2.0, 1.3, 0.6, "policy π\n(sample G)", "#c6dbef")
    _arrow(ax, (1.35, 2.3), (1.75, 2.3))
    ys = [3.6, 2.7, 1.8, 0.9]
    for y, text, r, a in zip(ys, COMPLETIONS, REWARDS, advantages, strict=True):
        _arrow(ax, (3.15, 2.3), (3.65, y + 0.2))
        _box(ax, 3.7, y, 1.3, 0.4, repr(text), "#f0f0f0")
        _arrow(ax, (5.05, y + 0.2), (5.55, y + 0.2))
        _box(ax, 5.6, y, 1.0, 0.4, f"r = {r:.1f}", "#fee6ce")
        _arrow(ax, (6.65, y + 0.2), (7.15, y + 0.2))
        color = "#a1d99b" if a > 0 else "#fcbba1"
        _box(ax, 7.2, y, 1.2, 0.4, f"A = {a:+.2f}", color)
        ax.text(8.55, y + 0.2, "push up" if a > 0 else "push down", va="center", fontsize=9,
                style="italic")  # fmt: skip
    ax.text(4.35, 4.3, "G completions", ha="center", fontsize=10)
    ax.text(6.1, 4.3, "verifier", ha="center", fontsize=10)
    ax.text(7.8, 4.3, "(r − mean) / std", ha="center", fontsize=10)
    ax.text(5.0, 0.2, f"group mean {mean:.2f}, std {std:.2f}: the group is its own baseline "
            "(no value network); all-equal rewards give A = 0", ha="center", fontsize=9)  # fmt: skip
    ax.set_xlim(-0.1, 9.6)
    ax.set_ylim(0.0, 4.6)
    ax.axis("off")
    ax.set_title("One GRPO step, for one prompt: sample a group, score it, compare within it")
    fig.tight_layout()
    return fig
