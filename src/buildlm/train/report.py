"""The end of a run in words: where the model stands against each baseline, and what to try.

A loss on its own says little to a learner. The count baselines (`baselines.py`) give it a
scale: a model above the bigram's loss has not learned more than "which token tends to follow
this one", whatever its sample looks like. So the run's last line names every baseline, the
ones the model did not beat included, and the hint to try the model uses a prompt taken from
the text it was trained on (a line of the validation split), not one that fits only Shakespeare.
"""

from __future__ import annotations

import shlex


def _listing(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def against_baselines(val_loss: float, baselines: dict[str, float]) -> str:
    """One sentence placing ``val_loss`` against every baseline, e.g.
    ``val loss 4.362: below the uniform (8.318), unigram (6.277) and bigram (4.479) baselines``."""
    text = f"val loss {val_loss:.3f}"
    below = [f"{name} ({loss:.3f})" for name, loss in baselines.items() if val_loss < loss]
    above = [f"{name} ({loss:.3f})" for name, loss in baselines.items() if val_loss >= loss]
    if not baselines:
        return text
    parts = []
    if below:
        parts.append(f"below the {_listing(below)} baseline{'s' if len(below) > 1 else ''}")
    if above:
        parts.append(
            f"{'but ' if below else ''}NOT below the {_listing(above)} baseline{'s' if len(above) > 1 else ''}: "
            "train longer (a larger --train.time_budget_s or --train.max_steps)"
        )
    return f"{text}: {', '.join(parts)}"


def suggest_prompt(text: str, max_words: int = 4) -> str:
    """The first few words of a line of ``text`` (a decoded piece of the validation split).

    The first line is skipped (the split may begin mid-line) unless it is the only one; a line
    of at least three words is preferred, so the prompt gives the model something to continue.
    """
    lines = [line.split() for line in text.splitlines()]
    candidates = lines[1:] or lines
    for min_words in (3, 1):
        for words in candidates:
            if len(words) >= min_words:
                return " ".join(words[:max_words])
    return ""


def generate_hint(run_dir: str, prompt: str) -> str:
    """The command that samples from the trained run, quoted for a POSIX shell."""
    flag = f" --prompt {shlex.quote(prompt)}" if prompt else ""
    return f"buildlm generate --model {shlex.quote(str(run_dir))}{flag}"
