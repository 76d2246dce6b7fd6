"""GPT data flow: token ids in, one row of logits per position out, with the tensor shapes.

Drawn bottom to top, the way the data flows: ids (B, T) -> token + position embeddings
(B, T, d) -> n_layers blocks, each keeping the shape (B, T, d) -> final norm -> the head, tied
to the token embedding -> logits (B, T, V).
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

STAGES = [
    ("token ids", "(B, T)", "#eeeeee"),
    ("token embedding  +  position embedding", "(B, T, d)", "#cfe2f3"),
    ("block 1: attention + MLP, residual", "(B, T, d)", "#fce5cd"),
    ("...", "", "white"),
    ("block n_layers", "(B, T, d)", "#fce5cd"),
    ("final LayerNorm", "(B, T, d)", "#d9ead3"),
    ("head: x @ tok_emb.weight.T (tied)", "(B, T, V)", "#cfe2f3"),
    ("softmax of row t: the next token's probabilities", "", "#eeeeee"),
]


def draw() -> Figure:
    """The whole model as a column of boxes, shapes on the right, the tied weight dashed."""
    fig = Figure(figsize=(7.5, 5.6))
    ax = fig.add_subplot()
    step, height, width = 1.0, 0.62, 5.2
    for i, (name, shape, colour) in enumerate(STAGES):
        y = i * step
        if name != "...":
            ax.add_patch(FancyBboxPatch((0, y), width, height, boxstyle="round,pad=0.04",
                                        facecolor=colour, edgecolor="#555555"))  # fmt: skip
        ax.text(width / 2, y + height / 2, name, ha="center", va="center", fontsize=9)
        ax.text(width + 0.25, y + height / 2, shape, ha="left", va="center", fontsize=9,
                family="monospace")  # fmt: skip
        if i:
            ax.add_patch(FancyArrowPatch((width / 2, y - step + height + 0.04), (width / 2, y - 0.04),
                                         arrowstyle="-|>", mutation_scale=12))  # fmt: skip
    # The tied weight: the same (V, d) matrix reads the ids and writes the logits.
    y_emb, y_head = 1 * step + height / 2, 6 * step + height / 2
    ax.add_patch(FancyArrowPatch((-0.1, y_emb), (-0.1, y_head), connectionstyle="arc3,rad=-0.35",
                                 arrowstyle="<->", linestyle="--", color="#3d85c6",
                                 mutation_scale=10))  # fmt: skip
    ax.text(-1.15, (y_emb + y_head) / 2, "same\n(V, d)\nmatrix", ha="center", va="center",
            fontsize=8, color="#3d85c6")  # fmt: skip
    ax.set_xlim(-1.8, width + 1.6)
    ax.set_ylim(-0.3, len(STAGES) * step)
    ax.axis("off")
    ax.set_title("GPT data flow (B: batch, T: tokens, d: d_model, V: vocabulary)", fontsize=10)
    return fig
