"""Multiple-choice items (HellaSwag format): what one question is, and how a file of them is read.

Each item is a context and a few candidate endings, one of them right::

    {"context": "She opened the jar and", "endings": ["poured the honey.", "sang."], "label": 0}

(one JSON object per line; HellaSwag's own ``ctx`` is accepted for ``context``, and a label
stored as a string, as on the Hub, is read as the number it holds). A bad line is reported as
``file:line`` with what is wrong. How a model answers the items is `buildlm.eval.choice`; the
bundled set built from the Shakespeare corpus is `buildlm.eval.bundled`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildlm.errors import undecodable_file


@dataclass(frozen=True)
class ChoiceItem:
    """One question: a context, the candidate endings and the index of the right one."""

    context: str
    endings: list[str]
    label: int

    def continuation(self, ending: str) -> str:
        """The text scored after the context for ``ending`` (see the module's note on spaces)."""
        if not self.context or self.context[-1].isspace() or ending[:1].isspace():
            return ending
        return " " + ending


def parse_item(obj: Any, where: str) -> ChoiceItem:
    """Check one decoded JSON line; ``where`` (``file:line``) starts every error message."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    context = obj.get("context", obj.get("ctx"))
    if not isinstance(context, str):
        raise ValueError(f"{where}: needs a string 'context' (the text before the endings)")
    endings = obj.get("endings")
    if endings is None:
        raise ValueError(f"{where}: has no 'endings' (a list of at least 2 candidate strings)")
    if (
        not isinstance(endings, list)
        or len(endings) < 2
        or not all(isinstance(e, str) and e for e in endings)
    ):
        raise ValueError(f"{where}: 'endings' must be a list of at least 2 non-empty strings")
    label = obj.get("label")
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label)  # HellaSwag on the Hub stores labels as strings
    if isinstance(label, bool) or not isinstance(label, int):
        raise ValueError(f"{where}: needs an integer 'label' (the index of the right ending)")
    if not 0 <= label < len(endings):
        raise ValueError(
            f"{where}: label {label} is out of range for {len(endings)} endings "
            f"(it must lie in 0..{len(endings) - 1})"
        )
    return ChoiceItem(context, list(endings), label)


def load_choice_file(path: str | os.PathLike) -> list[ChoiceItem]:
    """The items of a JSONL file; a bad line raises ``ValueError`` naming ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no multiple-choice file at {str(path)!r}")
    items = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise undecodable_file(path, err) from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None
        items.append(parse_item(obj, where))
    if not items:
        raise ValueError(f"{path}: the file holds no items; write one JSON object per line")
    return items
