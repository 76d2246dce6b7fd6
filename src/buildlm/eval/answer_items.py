"""Questions with checkable answers, ready to generate from: a bundled set or a user's file.

``instruct-tasks`` (`buildlm.data.bundled_tasks`, one split, ``instruct-tasks:add,parity``
picks tasks) or a ``.jsonl``/``.json``/``.csv``/``.tsv`` file. Each example is rendered with
the same template fine-tuning used (`buildlm.data.instruct`: ``alpaca``, ``chatml``, ``llama3``
or a format string such as ``"Question: {question}\\nAnswer: "``), so the prompt a model is
scored on is the one it learned to answer. The expected answer is the example's ``output``
field, or its ``answer`` field when it has no ``output`` (GSM8K's files: reasoning, then
``#### 72``; the numeric verifier reads the final number from it).
"""

from __future__ import annotations

from typing import Any

from buildlm.data import bundled_tasks
from buildlm.data.instruct import check_template, prompt_ids, render, stop_token_ids
from buildlm.data.records import Record, read_records, records_from_dicts
from buildlm.eval.exact_match import GenerationItem


def answer_records(data: str, split: str = "test") -> list[Record]:
    """The examples of a bundled instruction set's ``split``, or of a file (all of it)."""
    if bundled_tasks.is_bundled(data):
        base, _ = bundled_tasks.parse_name(data)
        if bundled_tasks.BUNDLED[base] != "instruct":
            raise ValueError(f"{data!r} has no answers to check; use instruct-tasks or a file")
        splits = bundled_tasks.load_bundled(data)
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(splits)}")
        return records_from_dicts(splits[split], f"{data}/{split}")
    return read_records(data)


def answer_field(record: Record) -> str:
    """``output`` when the example has one, else ``answer`` (GSM8K's name)."""
    return "output" if "output" in record.data or "messages" in record.data else "answer"


def answer_items(
    records: list[Record], template: str, tokenizer: Any, limit: int | None = None
) -> list[GenerationItem]:
    """Prompt ids, expected answer, stop conditions and task of each example (the first ``limit``)."""
    check_template(template)
    items = []
    for record in records[:limit] if limit is not None else records:
        rendered = render(record, template, response_field=answer_field(record))
        items.append(
            GenerationItem(
                prompt_ids(rendered, tokenizer),
                rendered.answer,
                rendered.stop,
                stop_token_ids(rendered, tokenizer),
                record.where,
                record.data.get("task"),
            )
        )
    if not items:
        raise ValueError("no examples to evaluate")
    return items
