"""The token-boundary picture: one box per token, alternating colours, the text unchanged."""

import pytest
from matplotlib.colors import to_hex

from buildlm.viz import layout_tokens, plot_tokens


def test_one_box_per_token_in_alternating_colours(tokenizer, tmp_path, png_size):
    text = "Hello world, tokenization is unhappiness!"
    ids = tokenizer.encode(text)
    fig = plot_tokens(tokenizer, text, tmp_path / "tok.png", figsize=(6, 2), dpi=50)
    ax = fig.axes[0]
    assert len(ax.patches) == len(ax.texts) == len(ids)
    drawn = [t.get_text() for t in ax.texts]
    assert drawn == [tokenizer.decode([i]).replace(" ", "\u00b7") for i in ids]
    assert "".join(drawn).replace("\u00b7", " ") == text
    colors = [to_hex(p.get_facecolor()) for p in ax.patches]
    assert all(a != b for a, b in zip(colors, colors[1:], strict=False))
    assert ax.patches[1].get_x() == len(drawn[0])  # boxes sit side by side, one cell per char
    assert png_size(tmp_path / "tok.png") == (300, 100)


def test_layout_wraps_lines_and_breaks_at_newlines():
    boxes = layout_tokens(["Hello", " world", "\n", "ab", "cd\n\nef"], width=8)
    placed = [(b.token, b.line, b.column, b.text) for b in boxes]
    assert placed == [
        (0, 0, 0, "Hello"),
        (1, 1, 0, "\u00b7world"),  # does not fit after "Hello": next line
        (2, 1, 6, "\u21b5"),  # a newline token ends its line
        (3, 2, 0, "ab"),
        (4, 2, 2, "cd\u21b5"),  # one token over three lines: three boxes
        (4, 3, 0, "\u21b5"),
        (4, 4, 0, "ef"),
    ]
    assert all(b.column + len(b.text) <= 8 for b in boxes)


def test_empty_text_is_a_clear_error(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="text is empty"):
        plot_tokens(tokenizer, "", tmp_path / "t.png")
