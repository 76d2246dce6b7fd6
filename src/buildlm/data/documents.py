"""What every reader of training text shares: a document, the reading options, bad records.

A *document* is one text with the place it came from (``Document.where``: ``"file:line"``,
``"file:row 12"``, ``"hf:name[train]:row 7"``). `buildlm prepare` ends each document with
``<|endoftext|>``. The readers (``read_json.py``, ``read_table.py``, ``read_hf.py``) turn a
record (a JSON object, a CSV or Parquet row, a dataset row) into its text with
:func:`record_text`:

- the field ``ReadOptions.field`` (``"text"`` unless ``--data.field NAME`` says otherwise);
- or, when the record has no such field but a chat ``messages`` list
  (``[{"role": "user", "content": ...}, ...]``), the conversation rendered with a chat template
  (``ReadOptions.chat_template``: ``chatml`` or ``llama3``), so a chat dataset trains the model
  on the exact text it will later be prompted with.

A bad record (malformed JSON, a missing field, a number where text belongs) goes to
`BadRecords`: by default it raises a ``ValueError`` naming the file, the line and the fix; with
``on_error="skip"`` (``--data.on_error skip``) it is counted and skipped instead, and the count
is reported at the end (and written to the manifest).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ON_ERROR = ("raise", "skip")
CHAT_TEMPLATES = ("chatml", "llama3")


@dataclass(frozen=True)
class Document:
    """One text to train on, and where it came from."""

    text: str
    where: str


@dataclass(frozen=True)
class ReadOptions:
    """How records become documents (the ``--data.*`` reading flags).

    Args:
        field: the field (JSON key, CSV or Parquet column) holding each document's text.
        chat_template: how a record with a chat ``messages`` list and no ``field`` is rendered.
        on_error: "raise" (stop at the first bad record, naming it) or "skip" (count and skip).
        split: the split of a Hugging Face dataset (``hf:NAME``).
        subset: the subset (configuration) of a Hugging Face dataset, if it has several.
        streaming: read a Hugging Face dataset as a stream instead of downloading it whole.
        flag_style: how the fixes in error messages spell flags: "train" (``--data.field``) or
            "prepare" (``--field``).
    """

    field: str = "text"
    chat_template: str = "chatml"
    on_error: str = "raise"
    split: str = "train"
    subset: str | None = None
    streaming: bool = True
    flag_style: str = "train"

    def __post_init__(self) -> None:
        if not self.field:
            raise ValueError(f"the text field name is empty; pass {self.flag('field')} NAME")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"unknown on_error {self.on_error!r}; choose raise or skip")
        if self.chat_template not in CHAT_TEMPLATES:
            raise ValueError(
                f"unknown chat_template {self.chat_template!r}; choose one of {', '.join(CHAT_TEMPLATES)}"
            )

    def flag(self, name: str) -> str:
        """The command-line spelling of setting ``name`` (``field`` -> ``--data.field``)."""
        return f"--{name.replace('_', '-')}" if self.flag_style == "prepare" else f"--data.{name}"


class BadRecords:
    """Raises on a bad record (``on_error="raise"``), or counts and skips it (``"skip"``)."""

    def __init__(self, options: ReadOptions) -> None:
        self.options = options
        self.count = 0
        self.first: str | None = None  # the first skipped record's message, for the summary

    def bad(self, where: str, problem: str, fix: str) -> None:
        message = f"{where}: {problem}; {fix}"
        if self.options.on_error != "skip":
            raise ValueError(f"{message} (or skip bad records with {self.options.flag('on_error')} skip)")
        self.count += 1
        if self.first is None:
            self.first = message

    def summary(self) -> str | None:
        """One line about the skipped records, or None when none was skipped."""
        if not self.count:
            return None
        return f"skipped {self.count:,} bad record(s); the first: {self.first}"


def record_text(record: Any, where: str, options: ReadOptions, bad: BadRecords) -> str | None:
    """The document text of one record, or None when the record is bad (and skipped)."""
    if not isinstance(record, Mapping):
        bad.bad(where, f"expected an object with a {options.field!r} field, got {type(record).__name__}",
                "write one JSON object per record")  # fmt: skip
        return None
    value = record.get(options.field)
    if value is None and options.field not in record and "messages" in record:
        value = record["messages"]
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # a chat: render it as the model will see it
        return _render_chat(value, where, options, bad)
    if value is None:
        fields = sorted(map(str, record))
        if options.field in record:
            bad.bad(where, f"the {options.field!r} field is empty (null)", "give it a text")
        else:
            bad.bad(where, f"no {options.field!r} field (its fields: {fields})",
                    f"pass {options.flag('field')} NAME to read another field")  # fmt: skip
        return None
    bad.bad(where, f"the {options.field!r} field is a {type(value).__name__}, not text",
            f"pass {options.flag('field')} NAME to read a text field")  # fmt: skip
    return None


def _render_chat(messages: list, where: str, options: ReadOptions, bad: BadRecords) -> str | None:
    from buildlm.tokenizer.chat_templates import chatml_prompt, llama3_prompt

    render = chatml_prompt if options.chat_template == "chatml" else llama3_prompt
    try:
        return render(messages)
    except ValueError as err:
        bad.bad(where, f"bad chat messages ({err})", "give a list of {role, content} objects")
        return None
