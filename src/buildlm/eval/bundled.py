"""``shakespeare-next-line``: a multiple-choice set built from the bundled Shakespeare corpus.

No download and no new file: the items are made by code, the same every time (fixed seed).
Each item is a few consecutive lines of one speech (the speaker's name included when it is among
them), the true next line, and three distractor lines drawn from elsewhere in the corpus::

    context:  "DUKE.\\nMerchant of Syracuse, plead no more;\\nI am not partial to infringe our laws:\\n"
    endings:  ["The enmity and discord which of late", <3 lines from other places>]

The right ending's position is random, so always answering "A" scores about 25 %. A model that
has learned how verse continues (metre, grammar, the topic of the speech) beats chance. The
lines come from the texts the bundled models are trained on, so this measures how well a model
fits Shakespeare, not generalisation to new text.
"""

from __future__ import annotations

import os
import random
from functools import lru_cache

from buildlm.eval.choice_items import ChoiceItem

NAME = "shakespeare-next-line"
SEED = 1616
N_ITEMS = 400
CONTEXT_LINES = 4
N_ENDINGS = 4


def list_bundled_choice() -> list[str]:
    """Names of the bundled multiple-choice sets."""
    return [NAME]


def is_bundled_choice(value: str | os.PathLike) -> bool:
    """True when ``value`` names a bundled set rather than a file."""
    return isinstance(value, str) and value in list_bundled_choice() and not os.path.exists(value)


def _is_verse(line: str) -> bool:
    """A line of speech: long enough to tell apart, not a speaker's name or a stage direction."""
    return (
        24 <= len(line) <= 72 and not line.isupper() and not line.startswith(("[", "ACT", "SCENE"))
    )


@lru_cache(maxsize=1)
def _all_items() -> tuple[ChoiceItem, ...]:
    from buildlm.data.corpora import corpus_documents

    # (context, answer) for every verse line preceded by CONTEXT_LINES lines of the same speech
    candidates: list[tuple[str, str]] = []
    pool: list[str] = []
    for text in corpus_documents("shakespeare").values():
        lines = [line.strip() for line in text.splitlines()]
        for i, line in enumerate(lines):
            if not _is_verse(line):
                continue
            pool.append(line)
            before = lines[i - CONTEXT_LINES : i] if i >= CONTEXT_LINES else []
            if len(before) == CONTEXT_LINES and all(before):  # no blank line: one speech
                candidates.append(("\n".join(before) + "\n", line))
    rng = random.Random(SEED)
    items = []
    for context, answer in rng.sample(candidates, N_ITEMS):
        distractors: list[str] = []
        while len(distractors) < N_ENDINGS - 1:
            line = rng.choice(pool)
            if line != answer and line not in distractors:
                distractors.append(line)
        label = rng.randrange(N_ENDINGS)
        endings = distractors[:label] + [answer] + distractors[label:]
        items.append(ChoiceItem(context, endings, label))
    return tuple(items)


def bundled_choice_items(name: str, limit: int | None = None) -> list[ChoiceItem]:
    """The items of a bundled set (the first ``limit`` of them)."""
    if name != NAME:
        raise ValueError(
            f"unknown multiple-choice set {name!r}; bundled sets are {list_bundled_choice()}"
        )
    items = list(_all_items())
    return items[:limit] if limit is not None else items
