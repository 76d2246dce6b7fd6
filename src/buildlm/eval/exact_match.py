"""Exact match: does the generated answer equal the expected one, character for character?

The strictest check of an instruction follower, and the right one when every answer is short
and checkable (a number, a word, a list of words). Leading and trailing whitespace is ignored;
nothing else is. Generation is greedy (temperature 0), so the score is repeatable, and runs
batched through `buildlm.infer.Engine` (left-padded prompts, one KV cache).

An expected answer that goes through a tool (``<tool>calculator: 2+2</tool><result>4</result>
4``) is judged on its final answer alone, what it says after its last tool result
(`buildlm.tools.calls.final_answer`): the reply must reach the right answer, however it wrote
its call. ``GenerationItem.tools`` lets the model call tools while it generates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from buildlm.tools.calls import RESULT_CLOSE, final_answer


def normalize(text: str) -> str:
    return text.strip()


def exact_match(prediction: str, answer: str) -> bool:
    """Equal up to surrounding whitespace; an answer with a tool result compares final answers."""
    if RESULT_CLOSE in answer:
        return final_answer(prediction) == final_answer(answer)
    return normalize(prediction) == normalize(answer)


@dataclass
class GenerationItem:
    """A prompt (ids), its expected answer, how generation stops, and labels for the report."""

    prompt_ids: list[int]
    answer: str
    stop: Sequence[str] = ()
    stop_token_ids: Sequence[int] = ()
    where: str = ""
    task: str | None = None
    tools: Sequence[str] = ()  # the tools the model may call (`buildlm.infer.tool_use`)


def generate_answers(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[GenerationItem],
    max_new_tokens: int = 32,
    batch_size: int = 64,
) -> list[str]:
    """Greedy completions of every item's prompt, batched (prompts of similar length together)."""
    from buildlm.infer.engine import Engine
    from buildlm.infer.requests import SamplingParams

    was_training = model.training
    engine = Engine(model, tokenizer, truncate_prompts=True)
    order = sorted(range(len(items)), key=lambda i: len(items[i].prompt_ids))
    out: list[str] = [""] * len(items)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        params = [
            SamplingParams(
                max_new_tokens=max_new_tokens,
                temperature=0.0,
                stop=tuple(items[i].stop),
                stop_token_ids=tuple(items[i].stop_token_ids),
                tools=tuple(items[i].tools),
            )
            for i in chunk
        ]
        completions = engine.generate([items[i].prompt_ids for i in chunk], params)
        for i, c in zip(chunk, completions, strict=True):
            out[i] = c.text
    model.train(was_training)
    return out


def exact_match_eval(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[GenerationItem],
    max_new_tokens: int = 32,
    batch_size: int = 64,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(scores, rows): exact match overall and per task, and one row per item with its output."""
    if not items:
        raise ValueError("no examples to evaluate")
    generated = generate_answers(model, tokenizer, items, max_new_tokens, batch_size)
    rows = []
    by_task: dict[str, list[bool]] = defaultdict(list)
    for item, text in zip(items, generated, strict=True):
        ok = exact_match(text, item.answer)
        rows.append(
            {"where": item.where, "task": item.task, "expected": item.answer, "generated": text, "correct": ok}
        )
        if item.task is not None:
            by_task[item.task].append(ok)
    scores: dict[str, Any] = {
        "exact_match": sum(r["correct"] for r in rows) / len(rows),
        "n": len(rows),
    }
    if by_task:
        scores["by_task"] = {t: sum(v) / len(v) for t, v in sorted(by_task.items())}
    return scores, rows
