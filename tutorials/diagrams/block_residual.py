"""One pre-LN transformer block and its two residual paths.

The residual stream runs straight up the left; each branch reads a normalised copy of it and
adds its result back: x = x + attn(norm1(x)), then x = x + mlp(norm2(x)). The stream itself is
never normalised, so the gradient has an uninterrupted path from the top to the bottom. The
two projections that write into the stream (attn.proj and mlp.proj) are the ones GPT-2
initialises with 0.02 / sqrt(2 * n_layers).
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch


def _box(ax, x: float, y: float, text: str, colour: str, w: float = 2.6, h: float = 0.55) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04",
                                facecolor=colour, edgecolor="#555555"))  # fmt: skip
    ax.text(x, y, text, ha="center", va="center", fontsize=9)


def _arrow(ax, a: tuple[float, float], b: tuple[float, float], **kw) -> None:
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, **kw))


def _plus(ax, x: float, y: float) -> None:
    ax.add_patch(Circle((x, y), 0.2, facecolor="white", edgecolor="black"))
    ax.text(x, y, "+", ha="center", va="center", fontsize=12)


def draw() -> Figure:
    """The block, bottom (input) to top (output)."""
    fig = Figure(figsize=(6.5, 6.2))
    ax = fig.add_subplot()
    stream_x, branch_x = 0.0, 2.6
    ax.text(stream_x, -0.45, "x  (B, T, d)", ha="center", fontsize=9, family="monospace")
    for base, norm, layer, proj in [(0.0, "norm1", "attention", "attn.proj"),
                                    (3.4, "norm2", "MLP: fc, GELU", "mlp.proj")]:  # fmt: skip
        y_norm, y_layer, y_add = base + 0.8, base + 1.7, base + 2.6
        start = base - 0.2 if base == 0 else base - 0.6  # from the input, or from the first +
        _arrow(ax, (stream_x, start), (stream_x, y_add - 0.2), color="#cc0000", linewidth=2)
        _arrow(ax, (stream_x, base + 0.3), (branch_x - 1.3, y_norm), connectionstyle="arc3,rad=-0.2")
        _box(ax, branch_x, y_norm, norm, "#d9ead3")
        _arrow(ax, (branch_x, y_norm + 0.3), (branch_x, y_layer - 0.3))
        _box(ax, branch_x, y_layer, f"{layer}\n-> {proj}", "#fce5cd", h=0.75)
        _arrow(ax, (branch_x - 1.3, y_layer + 0.2), (stream_x + 0.2, y_add), connectionstyle="arc3,rad=-0.2")
        _plus(ax, stream_x, y_add)
    _arrow(ax, (stream_x, 6.2), (stream_x, 6.9), color="#cc0000", linewidth=2)
    ax.text(stream_x, 7.05, "x  (B, T, d)", ha="center", fontsize=9, family="monospace")
    ax.text(stream_x - 0.35, 3.2, "residual stream\n(identity path)", ha="right", va="center",
            fontsize=8, color="#cc0000")  # fmt: skip
    ax.text(branch_x - 1.3, 6.6, "attn.proj, mlp.proj start at\nN(0, (0.02 / sqrt(2 n_layers))²)",
            ha="left", va="center", fontsize=7.5)  # fmt: skip
    ax.set_xlim(-2.2, 6.6)
    ax.set_ylim(-0.8, 7.4)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("One pre-LN block: two branches added to the residual stream", fontsize=10)
    return fig
