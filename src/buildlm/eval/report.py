"""Compare models side by side: perplexity and bits per byte on a text, accuracy on a choice set.

One row per model, one table (Markdown, so it pastes into a README or an issue)::

    | model | params | loss | ppl | bpb | acc | acc_norm |
    |---|---|---|---|---|---|---|
    | runs/small | 0.8M | 1.9321 | 6.90 | 2.1043 | 0.3650 | 0.3900 |

Bits per byte is the column to compare across models with different tokenizers; loss and
perplexity only compare models that share one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from buildlm.atomic import atomic_write_text
from buildlm.errors import undecodable_file
from buildlm.eval.choice import ChoiceResult, load_choice_items, score_choices
from buildlm.eval.perplexity import PerplexityResult, evaluate_perplexity

NONE = ("", "none")


@dataclass
class ModelReport:
    """The figures of one model (``None`` where that evaluation was not asked for)."""

    model: str
    params: int
    perplexity: PerplexityResult | None
    choice: ChoiceResult | None


def read_text(data: str | os.PathLike) -> str:
    """The text of a bundled corpus (``shakespeare``, ``the-verdict``) or a UTF-8 file."""
    from buildlm.data.corpora import is_corpus_name, load_corpus

    if is_corpus_name(data):
        return load_corpus(str(data))
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(
            f"no text file at {str(path)!r} (bundled corpora: shakespeare, the-verdict)"
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise undecodable_file(path, err) from None


def build_report(
    models: list[str],
    data: str | None = "shakespeare",
    choice: str | None = "shakespeare-next-line",
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    max_tokens: int | None = 8192,
    limit: int | None = 200,
    device: str = "auto",
    progress: bool = False,
) -> list[ModelReport]:
    """Evaluate each model folder on ``data`` (perplexity) and ``choice`` (multiple choice).

    ``data`` or ``choice`` set to ``None`` or ``"none"`` skips that evaluation. Inputs are read
    and checked before any model is loaded, so a typo fails at once.
    """
    from buildlm.device import resolve_device
    from buildlm.infer.load import load_model

    if not models:
        raise ValueError("give at least one model folder with --models")
    text = None if data is None or data in NONE else read_text(data)
    items = None if choice is None or choice in NONE else load_choice_items(choice, limit)
    if text is None and items is None:
        raise ValueError("nothing to evaluate: both --data and --choice are 'none'")
    dev = resolve_device(device)
    rows = []
    for path in models:
        model, tokenizer = load_model(path, dev)
        if tokenizer is None:
            raise ValueError(f"{path} has no tokenizer; cannot evaluate it on text")
        ppl = None
        if text is not None:
            ppl = evaluate_perplexity(
                model, tokenizer, text, context, stride, batch_size, max_tokens, progress
            )
        result = None
        if items is not None:
            result = score_choices(model, tokenizer, items, batch_size * 4, progress)
        params = sum(p.numel() for p in model.parameters())
        rows.append(ModelReport(str(path), params, ppl, result))
    return rows


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def _num(x: float, digits: int = 4) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def format_report(
    rows: list[ModelReport], data: str | None = None, choice: str | None = None
) -> str:
    """The Markdown table of ``rows``, with a line naming the data it was measured on."""
    header = ["model", "params"]
    has_ppl = any(r.perplexity is not None for r in rows)
    has_choice = any(r.choice is not None for r in rows)
    if has_ppl:
        header += ["loss", "ppl", "bpb", "tokens"]
    if has_choice:
        header += ["acc", "acc_norm", "items"]
    lines = []
    notes = []
    if has_ppl and data:
        notes.append(f"perplexity on `{data}`")
    if has_choice and choice:
        notes.append(f"multiple choice on `{choice}`")
    if notes:
        lines += ["Evaluation: " + "; ".join(notes) + ".", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r.model, _params(r.params)]
        if has_ppl:
            p = r.perplexity
            cells += [_num(p.loss), _num(p.ppl, 2), _num(p.bpb), str(p.tokens)] if p else ["-"] * 4
        if has_choice:
            c = r.choice
            cells += [_num(c.acc), _num(c.acc_norm), str(c.n)] if c else ["-"] * 3
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(text: str, path: str | os.PathLike) -> Path:
    """Write the Markdown atomically (`buildlm.atomic.atomic_write_text`)."""
    atomic_write_text(path, text)
    return Path(path)
