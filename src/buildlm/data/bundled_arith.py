"""Bundled arithmetic for instruction tuning: with a calculator tool, and without one.

Multi-digit arithmetic is where a small language model fails on its own: the answer to
``4821 * 37`` must be computed digit by digit, carries included, and a 4-layer model fine-tuned
for minutes cannot learn that. It can learn to *call a calculator* and to copy the result,
which is what ``instruct-tools`` teaches (the tool-call format of `buildlm.tools.calls`)::

    {"instruction": "Calculate.", "input": "4821 * 37",
     "output": "<tool>calculator: 4821 * 37</tool><result>178377</result> 178377", "task": "calc"}

The ``<result>`` block is what the runtime inserts when the model writes the call
(`buildlm.infer.tool_use`); in training it carries no loss (`buildlm.data.instruct`), and it
is computed here by the very calculator the runtime runs (`buildlm.tools.calculator`), so the
model is trained on exactly the text it will be shown. ``instruct-arith`` holds the same
questions with the bare answer as output (``"178377"``): the model alone, the baseline a tool
must beat.

The questions (task ``calc``; ``instruct-tools:calc`` selects it), drawn with a fixed seed
(``"instruct-tools/calc/1"``):

- ``a + b`` and ``a - b`` with ``a``, ``b`` in 100..9999 (a negative difference is fine);
- ``a * b`` with ``a`` in 10..999, ``b`` in 10..99;
- ``(a + b) * c`` with ``a``, ``b`` in 10..99, ``c`` in 2..9;
- ``a / b`` with a whole quotient: ``b`` in 2..99, the quotient in 10..999.

Splits: 5000 train, 50 val, 200 test examples, no question in two splits.
"""

from __future__ import annotations

import random
from functools import cache
from typing import Any

from buildlm.tools.calculator import calculate
from buildlm.tools.calls import call_and_result

ARITH_TASKS = ("calc",)
ARITH_SPLITS = {"train": 5000, "val": 50, "test": 200}
INSTRUCTION = "Calculate."


def _question(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f"{rng.randint(100, 9999)} + {rng.randint(100, 9999)}"
    if kind == 1:
        return f"{rng.randint(100, 9999)} - {rng.randint(100, 9999)}"
    if kind == 2:
        return f"{rng.randint(10, 999)} * {rng.randint(10, 99)}"
    if kind == 3:
        return f"({rng.randint(10, 99)} + {rng.randint(10, 99)}) * {rng.randint(2, 9)}"
    divisor = rng.randint(2, 99)
    return f"{divisor * rng.randint(10, 999)} / {divisor}"


@cache
def _questions() -> dict[str, tuple[str, ...]]:
    rng = random.Random("instruct-tools/calc/1")
    seen: set[str] = set()
    items: list[str] = []
    while len(items) < sum(ARITH_SPLITS.values()):
        q = _question(rng)
        if q not in seen:
            seen.add(q)
            items.append(q)
    out, start = {}, 0
    for split, n in ARITH_SPLITS.items():
        out[split] = tuple(items[start : start + n])
        start += n
    return out


def _check(tasks: list[str] | None) -> None:
    unknown = [t for t in tasks or [] if t not in ARITH_TASKS]
    if unknown or tasks == []:
        raise ValueError(
            f"unknown arithmetic task(s) {unknown}; choose from {', '.join(ARITH_TASKS)}"
        )


def arith_examples(
    with_tool: bool, tasks: list[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The ``instruct-tools`` (``with_tool=True``) or ``instruct-arith`` splits."""
    _check(tasks)
    out: dict[str, list[dict[str, Any]]] = {}
    for split, questions in _questions().items():
        items = []
        for q in questions:
            answer = calculate(q)
            output = f"{call_and_result('calculator', q)} {answer}" if with_tool else answer
            items.append({"instruction": INSTRUCTION, "input": q, "output": output, "task": "calc"})
        out[split] = items
    return out
