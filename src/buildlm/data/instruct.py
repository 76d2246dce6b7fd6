"""Instruction-tuning data: examples, prompt templates, and the loss mask on response tokens.

Two kinds of example are read (JSONL or a JSON list):

- **Alpaca style**: ``{"instruction": ..., "input": ..., "output": ...}`` (``input`` optional);
- **chat style**: ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}``.

A *template* turns an example into the exact text the model sees:

- ``alpaca``: the Stanford Alpaca format (``### Instruction:`` ... ``### Response:``), the
  response followed by the tokenizer's end-of-text token so the model learns to stop;
- ``chatml`` (Qwen) and ``llama3``: the chat formats of `buildlm.tokenizer.chat_templates`, so a model
  fine-tuned here speaks the format its family expects; the turn-end marker (``<|im_end|>``,
  ``<|eot_id|>``) ends the response;
- any Python format string with ``{field}`` names, e.g. ``"Q: {instruction} {input}\\nA: "``:
  the prompt, followed by the ``output`` field.

**The loss mask.** The model should learn to *answer*, not to reproduce prompts: every prompt
token (and every pad) gets the target ``-100``, which ``F.cross_entropy(ignore_index=-100)``
skips, so only response tokens (and the end marker) carry loss. In a multi-turn chat every
assistant turn is trained, never the user's or system's.

Each piece of text (prompt, response) is tokenized separately and the ids are concatenated. At
evaluation time the prompt is tokenized the same way, so the model sees exactly the ids it was
trained on, even where BPE would have merged across the prompt/response boundary.

**Tool results.** A response that calls a tool (``<tool>calculator: 2+2</tool><result>4</result>
4``, `buildlm.tools.calls`) holds text the model never writes: the ``<result>...</result>``
block, which the runtime inserts. It is tokenized on its own, as the runtime tokenizes it, and
carries no loss (`buildlm.tools.calls.split_results`): the model learns to call and to read,
not to guess a result.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from buildlm.data.records import Record
from buildlm.tokenizer.chat_templates import chatml_prompt, check_messages, llama3_prompt
from buildlm.tools.calls import split_results

IGNORE = -100  # the target of tokens that carry no loss (F.cross_entropy's ignore_index)

ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
TEMPLATES = ("alpaca", "chatml", "llama3")
_CHAT_FORMATS: dict[str, Callable[..., str]] = {"chatml": chatml_prompt, "llama3": llama3_prompt}
# Where generation stops besides the end-of-text token: the turn-end markers, and for Alpaca
# the start of a new "### ..." section (a model that runs on would begin another example).
_STOPS = {"alpaca": ["\n\n###"], "chatml": ["<|im_end|>"], "llama3": ["<|eot_id|>"]}


def check_template(template: str) -> str:
    """A known template name, or a format string with at least one ``{field}``."""
    if template in TEMPLATES:
        return template
    fields = _format_fields(template)
    if not fields:
        raise ValueError(
            f"unknown prompt template {template!r}; choose one of {', '.join(TEMPLATES)}, or give a "
            "format string with {field} names, e.g. 'Q: {instruction}\\nA: '"
        )
    return template


def _format_fields(template: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f]
    except ValueError as err:
        raise ValueError(f"bad prompt template {template!r}: {err}") from None


@dataclass
class Rendered:
    """An example as text: prompt pieces (text, trained?), the response text, the bare answer."""

    prompt: list[tuple[str, bool]]
    response: str  # what the model learns to write after the prompt, end marker included
    answer: str  # the response content alone, for exact-match evaluation
    add_eot: bool  # follow the response with the tokenizer's end-of-text token
    stop: list[str] = field(default_factory=list)  # stop strings for generation


def _messages(record: Record) -> list[dict[str, str]]:
    messages = record.data.get("messages")
    if not isinstance(messages, list):
        raise ValueError(f"{record.where}: 'messages' must be a non-empty list of {{role, content}}")
    try:
        check_messages(messages)
    except ValueError as err:
        raise ValueError(f"{record.where}: {err}") from None
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _user_text(record: Record) -> str:
    instruction = record.get_str("instruction")
    extra = record.get_str("input", required=False)
    return instruction + ("\n\n" + extra if extra.strip() else "")


def conversation(record: Record, response_field: str | None = "output") -> tuple[list[dict[str, str]], str]:
    """(messages before the final reply, the final reply) of an example.

    ``response_field`` names the field holding the reply (``"output"``; ``"chosen"`` or
    ``"rejected"`` for preference pairs). A chat example's reply is its last message when that
    is the assistant's and ``response_field`` is absent from the example.
    """
    if "messages" in record.data:
        messages = _messages(record)
        if response_field and response_field in record.data:
            return messages, record.get_str(response_field)
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"{record.where}: the conversation must end with an assistant message")
        if len(messages) < 2:
            raise ValueError(f"{record.where}: the conversation has no message before the reply")
        return messages[:-1], messages[-1]["content"]
    messages = []
    system = record.get_str("system", required=False)
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": _user_text(record)})
    reply = record.get_str(response_field) if response_field else ""
    return messages, reply


def render(
    record: Record, template: str, response_field: str = "output", train_history: bool = True
) -> Rendered:
    """The text pieces of one example under ``template`` (see the module docstring).

    ``train_history=False`` leaves earlier assistant turns of a chat untrained (DPO scores the
    final reply only).
    """
    template = check_template(template)
    if template in _CHAT_FORMATS:
        return _render_chat(record, template, response_field, train_history)
    if "messages" in record.data:  # a chat example under a flat template: one exchange only
        messages, reply = conversation(record, response_field)
        users = [m for m in messages if m["role"] == "user"]
        if len(users) != 1 or any(m["role"] == "assistant" for m in messages):
            raise ValueError(
                f"{record.where}: template {template!r} takes one instruction and one response; "
                "use --instruct.template chatml or llama3 for multi-turn conversations"
            )
        data = {"instruction": users[0]["content"], "input": "", response_field: reply}
        record = Record(data, record.where)
    if template == "alpaca":
        has_input = bool(record.get_str("input", required=False).strip())
        fmt = ALPACA_PROMPT if has_input else ALPACA_PROMPT_NO_INPUT
    else:
        fmt = template
    prompt = _fill(fmt, record)
    answer = record.get_str(response_field)
    return Rendered([(prompt, False)], answer, answer, add_eot=True, stop=list(_STOPS.get(template, [])))


def _fill(fmt: str, record: Record) -> str:
    values = {}
    for name in _format_fields(fmt):
        if name not in record.data or record.data[name] is None:
            raise ValueError(
                f"{record.where}: the prompt template uses the field {name!r}, which this example "
                f"lacks (its fields: {sorted(record.data)})"
            )
        values[name] = record.get_str(name)
    return fmt.format(**values)


def _render_chat(record: Record, template: str, response_field: str, train_history: bool) -> Rendered:
    """Chat formats: each message's text is the difference between successive renderings."""
    fmt = _CHAT_FORMATS[template]
    messages, reply = conversation(record, response_field)
    if messages[0]["role"] == "assistant":
        raise ValueError(f"{record.where}: the conversation starts with an assistant message")
    pieces: list[tuple[str, bool]] = []
    done = ""
    full_conversation = [*messages, {"role": "assistant", "content": reply}]
    for k, m in enumerate(full_conversation):
        if m["role"] == "assistant":
            head = fmt(full_conversation[:k], add_generation_prompt=True)
            pieces.append((head[len(done) :], False))
            done = head
        text = fmt(full_conversation[: k + 1])
        if not text.startswith(done):  # the formats are prefix-consistent; guard anyway
            raise ValueError(f"template {template!r} is not prefix-consistent at message {k}")
        pieces.append((text[len(done) :], train_history and m["role"] == "assistant"))
        done = text
    response = pieces.pop()[0]  # the final reply (content + turn-end marker)
    answer = reply.strip() if template == "llama3" else reply
    return Rendered(pieces, response, answer, add_eot=False, stop=list(_STOPS[template]))


# --- tokens ---------------------------------------------------------------------------------


@dataclass
class SFTExample:
    """Token ids of prompt + response and their targets (``IGNORE`` on the prompt)."""

    ids: list[int]
    labels: list[int]
    where: str = ""


@dataclass
class SFTBatch:
    """Inputs x (B, T) and targets y (B, T) (right-padded; ``IGNORE`` where no loss)."""

    x: torch.Tensor
    y: torch.Tensor

    def to(self, device: torch.device | str) -> SFTBatch:
        return SFTBatch(self.x.to(device), self.y.to(device))


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Ids of template text: special-token markup (``<|im_end|>``) becomes the special id
    when the tokenizer has it, and ordinary text otherwise."""
    return tokenizer.encode(text, allowed_special="all")


def encode_rendered(rendered: Rendered, tokenizer: Any) -> tuple[list[int], list[int], int]:
    """(ids, labels, prompt_length) of the whole example, before truncation.

    ``prompt_length`` counts the ids before the final response.
    """
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in rendered.prompt:
        piece, piece_labels = _encode_trained(tokenizer, text, trained)
        ids += piece
        labels += piece_labels
    prompt_length = len(ids)
    response, response_labels = _encode_trained(tokenizer, rendered.response, True)
    eot = getattr(tokenizer, "eot_token", None)
    if rendered.add_eot and eot is not None:
        response, response_labels = response + [eot], response_labels + [eot]
    ids += response
    labels += response_labels
    return ids, labels, prompt_length


def _encode_trained(tokenizer: Any, text: str, trained: bool) -> tuple[list[int], list[int]]:
    """(ids, labels) of one piece; in a trained piece, tool results are cut out and untrained."""
    if not trained:
        ids = encode_text(tokenizer, text)
        return ids, [IGNORE] * len(ids)
    ids, labels = [], []
    for part, written_by_model in split_results(text):
        part_ids = encode_text(tokenizer, part)
        ids += part_ids
        labels += part_ids if written_by_model else [IGNORE] * len(part_ids)
    return ids, labels


def prompt_ids(rendered: Rendered, tokenizer: Any) -> list[int]:
    """The ids a model is given at evaluation time: every prompt piece, no response."""
    return [i for text, _ in rendered.prompt for i in encode_text(tokenizer, text)]


def stop_token_ids(rendered: Rendered, tokenizer: Any) -> list[int]:
    """End-of-text plus the template's turn-end marker where the tokenizer has it as one token."""
    specials = getattr(tokenizer, "special_tokens", {}) or {}
    out = [specials[s] for s in rendered.stop if s in specials]
    eot = getattr(tokenizer, "eot_token", None)
    return ([eot] if eot is not None else []) + out


def make_sft_examples(
    rendered: Sequence[tuple[Rendered, str]], tokenizer: Any, max_length: int
) -> tuple[list[SFTExample], int]:
    """Tokenize rendered examples, cut to ``max_length + 1`` ids (inputs and shifted targets).

    Returns the examples and how many were dropped because the prompt alone filled the window
    (no response token would be left to learn from).
    """
    out, dropped = [], 0
    for r, where in rendered:
        ids, labels, prompt_length = encode_rendered(r, tokenizer)
        if prompt_length >= max_length:
            dropped += 1
            continue
        out.append(SFTExample(ids[: max_length + 1], labels[: max_length + 1], where))
    return out, dropped


def collate_sft(examples: list[SFTExample], pad_id: int = 0) -> SFTBatch:
    """x = ids[:-1], y = labels[1:] (target t is the token after input t), right-padded."""
    width = max(len(e.ids) for e in examples) - 1
    x = torch.full((len(examples), width), pad_id, dtype=torch.long)
    y = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.ids) - 1
        x[i, :n] = torch.tensor(e.ids[:-1])
        y[i, :n] = torch.tensor(e.labels[1:])
    return SFTBatch(x, y)
