"""Token boundaries: a text drawn as the model reads it, one coloured box per token.

This is the picture the tiktokenizer web app made popular. Consecutive tokens get alternating
colours, so where one token ends and the next begins is plain to see: common words are one
token, rare words break into pieces, a leading space belongs to the word after it (" world",
drawn "·world"), numbers split in odd places, and a character outside ASCII may span several
tokens (each piece then shows as U+FFFD, "�", because it is not a whole character on its own).

The layout is a grid of character cells in a monospaced font: a token of n characters takes n
cells, lines wrap at ``width`` cells, and a newline inside a token (drawn "↵") ends the line.
The font size is chosen so that ``width`` cells fill the figure's width and every line fits
its height, so the picture is the ``figsize`` asked for, whatever the text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from buildlm.viz.figure import VISIBLE, new_figure, save_png

# Soft colours that keep black text readable; consecutive tokens never share one.
COLORS = ("#a8d8f0", "#f9d78f", "#b5e5a4", "#f4b6cc", "#cbbcf2")
CHAR_WIDTH = 0.6  # advance of one monospaced character, in units of the font size
LINE_SPACING = 1.5  # line height, in units of the font size


@dataclass(frozen=True)
class TokenBox:
    """Where a (piece of a) token is drawn: ``length`` cells from ``column`` on line ``line``."""

    token: int  # position of the token in the text's token sequence
    line: int
    column: int
    text: str  # the characters drawn, with · ↵ → for space, newline, tab


def layout_tokens(pieces: list[str], width: int) -> list[TokenBox]:
    """Place each token's text on a grid ``width`` cells wide.

    A token that does not fit on the current line starts the next one; a newline ends the
    line after its ↵, so a token can be drawn as several boxes (one per line it touches).
    """
    if width < 1:
        raise ValueError(f"width must be at least 1 character, got {width}")
    boxes: list[TokenBox] = []
    line = column = 0
    for index, piece in enumerate(pieces):
        parts = piece.split("\n")
        for j, part in enumerate(parts):
            newline = j < len(parts) - 1
            shown = part.translate(VISIBLE) + ("\u21b5" if newline else "")
            if shown:
                if column > 0 and column + len(shown) > width:
                    line, column = line + 1, 0
                boxes.append(TokenBox(index, line, column, shown))
                column += len(shown)
            if newline:
                line, column = line + 1, 0
    return boxes


def plot_tokens(
    tokenizer: object,
    text: str,
    path: str | os.PathLike,
    *,
    width: int = 60,
    figsize: tuple[float, float] = (8.0, 3.0),
    dpi: float = 100,
) -> Figure:
    """Draw ``text`` split into tokens, alternating box colours; write a PNG, return the figure.

    ``width`` is the line length in characters. The boxes are ``fig.axes[0].patches`` and
    their texts ``fig.axes[0].texts``, in reading order.
    """
    ids = tokenizer.encode(text, allowed_special="all")
    if not ids:
        raise ValueError("the text is empty; there are no tokens to draw")
    pieces = [tokenizer.token_bytes(i).decode("utf-8", errors="replace") for i in ids]
    boxes = layout_tokens(pieces, width)
    n_lines = boxes[-1].line + 1

    fig = new_figure(figsize, dpi, layout=None)
    left, bottom, ax_w, ax_h = 0.02, 0.02, 0.96, 0.86  # axes in figure fractions; title above
    ax = fig.add_axes((left, bottom, ax_w, ax_h))
    ax.set_xlim(0, width)
    ax.set_ylim(max(n_lines, 1), 0)  # line 0 at the top
    ax.axis("off")
    # The largest font whose characters fit a cell and whose lines fit the height (in points).
    cell = ax_w * figsize[0] * 72 / width
    line_height = ax_h * figsize[1] * 72 / n_lines
    fontsize = min(cell / CHAR_WIDTH, line_height / LINE_SPACING)
    for box in boxes:
        color = COLORS[box.token % len(COLORS)]
        ax.add_patch(Rectangle((box.column, box.line + 0.1), len(box.text), 0.8,
                               facecolor=color, edgecolor="white", linewidth=0.8))  # fmt: skip
        ax.text(box.column, box.line + 0.5, box.text, family="DejaVu Sans Mono",
                fontsize=fontsize, va="center", ha="left")  # fmt: skip
    fig.suptitle(f"{len(ids)} tokens, {len(text)} characters", fontsize=10, y=0.98)
    save_png(fig, path)
    return fig
