"""Verifiers: programs that check a model's answer and turn it into a reward.

Reinforcement learning with verifiable rewards (GRPO and its kin) samples several completions
per prompt and scores each one; best-of-N and self-consistency at inference time do the same.
Neither needs a learned reward model when the answer can be *checked*: a sum, a word, a number.
A verifier is that check, as a small object::

    verifier = verifier_for("numeric", format_weight=0.1)
    verdict = verifier.score(prompt, "6 * 7 = 42.\\n#### 42", answer="42")
    verdict.reward, verdict.correct, verdict.parsed, verdict.format_ok  # 1.1, True, "42", True

Every verifier does two steps, kept apart so that majority voting can use the first alone:

1. `Verifier.parse`: read the answer out of the completion (text after an end-of-turn marker is
   ignored) -> the parsed answer in a canonical spelling (``None`` when there is none), and
   whether it was given in the requested form;
2. `Verifier.matches`: compare a parsed answer with the expected one.

The reward is ``correct + format_weight * format_ok``: correctness alone by default; a small
format weight rewards answers in the requested form (a marker, a single line) even when wrong,
which helps a model that has not learned the form yet. Two verifiers are ready:

- `ExactVerifier` (``"exact"``, and every bundled ``instruct-tasks`` task): the first line of the
  reply, compared as `buildlm.eval.exact_match` compares; the form is "the answer alone";
- `NumericVerifier` (``"numeric"``; ``"numeric-strict"`` requires a marker): the last marked
  number (``#### 42``, ``\\boxed{42}``, "the answer is 42", see `buildlm.eval.answers`), else the
  last number at all; compared as values with a tolerance; the form is "marked".
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

from buildlm.eval.answers import (
    close,
    final_answer,
    format_number,
    last_number,
    parse_number,
    reference_value,
)
from buildlm.eval.exact_match import exact_match, normalize

# Where a reply ends when the text runs on: the end-of-text and turn-end specials, and Alpaca's
# next section. (The Engine already stops there; a caller decoding tokens itself may not.)
END_MARKERS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "\n\n###")


@dataclass(frozen=True)
class Verdict:
    """The check of one completion.

    Args:
        reward: ``float(correct) + format_weight * float(format_ok)``.
        correct: the parsed answer equals the expected one (False without an expected answer).
        parsed: the answer read from the completion, canonically spelled (None: no answer).
        format_ok: the answer was given in the requested form.
    """

    reward: float
    correct: bool
    parsed: str | None
    format_ok: bool


@dataclass(frozen=True)
class Verifier(ABC):
    """Checks completions against expected answers (see the module docstring).

    Args:
        format_weight: the reward for an answer in the requested form, added to correctness.
        end_markers: the reply ends at the first of these (the rest is ignored).
    """

    name: ClassVar[str]
    format_weight: float = 0.0
    end_markers: tuple[str, ...] = END_MARKERS

    def __post_init__(self) -> None:
        if not math.isfinite(self.format_weight):
            raise ValueError(f"format_weight must be a finite number, got {self.format_weight!r}")

    def reply(self, completion: str) -> str:
        """The completion up to its first end marker."""
        cut = len(completion)
        for marker in self.end_markers:
            at = completion.find(marker)
            if at != -1:
                cut = min(cut, at)
        return completion[:cut]

    @abstractmethod
    def parse(self, completion: str) -> tuple[str | None, bool]:
        """(the answer in ``completion`` canonically spelled or None, given in the requested form)."""

    @abstractmethod
    def matches(self, parsed: str, answer: str) -> bool:
        """Whether a parsed answer equals the expected ``answer``."""

    def score(self, prompt: str, completion: str, answer: str | None) -> Verdict:
        """Check ``completion`` (the model's reply to ``prompt``) against ``answer``.

        ``prompt`` is unused by the ready verifiers; it is part of the interface so that a
        verifier can check what the prompt asked for.
        """
        parsed, format_ok = self.parse(completion)
        correct = parsed is not None and answer is not None and self.matches(parsed, answer)
        return Verdict(
            float(correct) + self.format_weight * float(format_ok), correct, parsed, format_ok
        )


@dataclass(frozen=True)
class ExactVerifier(Verifier):
    """The reply's answer equals the expected text (`buildlm.eval.exact_match`'s comparison).

    Args:
        first_line: the answer is the reply's first non-blank line (right for one-line answers
            such as the bundled tasks'); False: the whole reply.
    """

    name: ClassVar[str] = "exact"
    first_line: bool = True

    def parse(self, completion: str) -> tuple[str | None, bool]:
        text = normalize(self.reply(completion))
        if not text:
            return None, False
        if not self.first_line:
            return text, True
        head, _, rest = text.partition("\n")
        return normalize(head), not rest.strip()  # the form: the answer alone on its line

    def matches(self, parsed: str, answer: str) -> bool:
        return exact_match(parsed, answer)


@dataclass(frozen=True)
class NumericVerifier(Verifier):
    """The reply's final number equals the expected one, as values (``0.75 == 3/4``).

    Args:
        strict: only a marked answer counts (``####``, ``\\boxed{}``, "the answer is"); False
            falls back to the last number in the reply (not in the requested form).
        rel_tol, abs_tol: how close two values must be (`math.isclose`'s rule).
    """

    name: ClassVar[str] = "numeric"
    strict: bool = False
    rel_tol: float = 1e-6
    abs_tol: float = 1e-9

    def parse(self, completion: str) -> tuple[str | None, bool]:
        text = self.reply(completion)
        value = final_answer(text)
        if value is not None:
            return format_number(value), True
        value = None if self.strict else last_number(text)
        return (format_number(value) if value is not None else None), False

    def matches(self, parsed: str, answer: str) -> bool:
        value = parse_number(parsed)
        if value is None:  # not one of ours: read it as a reply would be read
            value = final_answer(parsed)
            value = value if value is not None else last_number(parsed)
        return value is not None and close(
            value, reference_value(answer), self.rel_tol, self.abs_tol
        )


VERIFIERS: dict[str, Callable[..., Verifier]] = {
    "exact": ExactVerifier,
    "numeric": NumericVerifier,
    "numeric-strict": partial(NumericVerifier, strict=True),
}


def _task_verifiers() -> dict[str, str]:
    """Data sets and tasks that name their verifier: the bundled instruction tasks, GSM8K."""
    from buildlm.data.bundled_tasks import INSTRUCT_TASKS

    return {"instruct-tasks": "exact", **dict.fromkeys(INSTRUCT_TASKS, "exact"), "gsm8k": "numeric"}


def known_verifiers() -> list[str]:
    """The names `verifier_for` takes: verifiers, then tasks and data sets."""
    return [*VERIFIERS, *_task_verifiers()]


def verifier_for(name_or_task: str, format_weight: float = 0.0) -> Verifier:
    """The verifier named ``name_or_task`` ("exact", "numeric", "numeric-strict"), or the one for a
    task or data set ("add", "instruct-tasks", "instruct-tasks:add,parity", "gsm8k")."""
    base = name_or_task.partition(":")[0].strip()
    name = _task_verifiers().get(base, base)
    if name not in VERIFIERS:
        raise ValueError(
            f"unknown verifier {name_or_task!r}; choose one of {', '.join(known_verifiers())}"
        )
    return VERIFIERS[name](format_weight=format_weight)
