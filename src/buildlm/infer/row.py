"""One row of a decode batch: a request's tokens, settings, stop conditions and slide rule.

A `Row` is what `buildlm.infer.batch.DecodeBatch` decodes and what the server's requests hold
(one per choice). It knows its prompt, what it generated, how to pick its next token (its
logits processors and seeded generator), when it stops (a stop token id, a stop string matched
on the decoded text, ``max_new_tokens``) and the one rule for sliding its window once it has
outgrown the model's context (`Row.slide`). `make_row` checks a prompt and builds its row.
A row with tools (`buildlm.infer.tool_use`) also runs the calls it writes and is fed their
results: `next_token` gives the id to feed instead of the sampled one while it has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from buildlm.infer.detokenize import IncrementalDetokenizer
from buildlm.infer.processors import LogitsProcessorList
from buildlm.infer.requests import Completion, SamplingParams
from buildlm.infer.tool_use import ToolUse

if TYPE_CHECKING:
    from buildlm.model import ModelConfig


@dataclass(eq=False)  # a row is itself, not its contents: usable as a dict key
class Row:
    """The running state of one sequence: its prompt, settings, and what it generated so far."""

    prompt: list[int]
    params: SamplingParams
    detok: IncrementalDetokenizer | None
    stop_ids: frozenset[int]
    processors: LogitsProcessorList
    generator: torch.Generator | None
    generated: list[int] = field(default_factory=list)
    done: bool = False
    finish_reason: str = "length"  # "stop", "length" or "cancelled"
    start: int = 0  # where the window the cache holds begins in `sequence` (moved by a slide)
    tools: ToolUse | None = None  # the tools it may call (None: no tools)
    inserted: list[int] = field(default_factory=list)  # positions in `generated` a tool fed

    @property
    def sequence(self) -> list[int]:
        return self.prompt + self.generated

    @property
    def window(self) -> list[int]:
        """The tokens the row's cache holds (its last one pending while a step is in flight)."""
        return self.sequence[self.start :]

    @property
    def remaining(self) -> int:
        """How many more tokens it may generate (0 once done)."""
        return 0 if self.done else self.params.max_new_tokens - len(self.generated)

    def outgrew(self, context_length: int) -> bool:
        """Whether its window (its pending token included) no longer fits the context."""
        length = len(self.prompt) + len(self.generated) - self.start
        return not self.done and length > context_length

    def slide(self, context_length: int) -> None:
        """Keep the last ``context_length - context_length // 4`` tokens once the window outgrew
        the context; a row that still fits keeps its whole window, whatever its neighbours do.

        A finished row keeps only its last token: nobody reads its logits, and its old window
        must not hold a fixed-shape batch's cache wide.
        """
        if self.done:
            self.start = len(self.sequence) - 1
        elif self.outgrew(context_length):
            self.start = len(self.sequence) - (context_length - context_length // 4)

    def next_token(self, picked: int) -> tuple[int, bool]:
        """``(token, fed)``: the id of a tool result being fed, if any, else ``picked``."""
        if self.tools is not None and self.tools.feeding and not self.done:
            return self.tools.next_token(), True
        return picked, False

    def push(self, token: int, fed: bool = False) -> str:
        """Record the next token, check the stop conditions; return the new text ("" if none).

        ``fed``: the token is a tool result's (`next_token`), not the model's choice: it is no
        stop token, and the text it completes is not scanned for calls.
        """
        if self.done:
            return ""
        if token in self.stop_ids and not fed:
            self.done, self.finish_reason = True, "stop"
            return self.detok.flush() if self.detok else ""
        if fed:
            self.inserted.append(len(self.generated))
        self.generated.append(token)
        text = self.detok.push(token) if self.detok else ""
        if self.detok is not None and self.detok.stopped:
            self.done, self.finish_reason = True, "stop"
        elif len(self.generated) >= self.params.max_new_tokens:
            self.done = True
            text += self.detok.flush() if self.detok else ""
        elif self.tools is not None and self.detok is not None:
            if not fed:
                self.tools.scan(self.detok.text)
            elif not self.tools.feeding:  # the result is all in: calls start after it
                self.tools.scan_from = len(self.detok.text)
        return text

    def cancel(self) -> None:
        """End the row now (its client went away); the batch drops it at the next `decode`."""
        self.done, self.finish_reason = True, "cancelled"

    def completion(self) -> Completion:
        text = self.detok.text if self.detok is not None else ""
        return Completion(self.prompt, list(self.generated), text, self.finish_reason,
                          list(self.inserted))  # fmt: skip


def make_row(
    prompt: str | Sequence[int],
    params: SamplingParams,
    config: ModelConfig,
    tokenizer: Any = None,
    truncate_prompt: bool = False,
    device: torch.device | str = "cpu",
) -> Row:
    """A `Row` for ``prompt`` (a text, or ids) decoded with ``params`` by a model of ``config``.

    Raises ValueError for a prompt that cannot be decoded: empty, ids out of the vocabulary,
    longer than the context (unless ``truncate_prompt``: then its end is kept). A text prompt is
    a raw document: special-token text in it (``<|endoftext|>``) becomes the special token.
    """
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError(
                "text prompts need a tokenizer; pass Engine(model, tokenizer) or token ids"
            )
        ids = tokenizer.encode(prompt, allowed_special="all")
    else:
        ids = [int(i) for i in prompt]
    if not ids:
        raise ValueError("the prompt is empty; give at least one token")
    vocab = config.vocab_size
    if min(ids) < 0 or max(ids) >= vocab:
        raise ValueError(f"prompt token ids must lie in [0, {vocab}), got {min(ids)}..{max(ids)}")
    if len(ids) > config.context_length:
        if not truncate_prompt:
            raise ValueError(
                f"the prompt has {len(ids)} tokens, more than the model's context_length="
                f"{config.context_length}; shorten it, or keep its end (Engine(truncate_prompts=True), "
                "buildlm generate --truncate-prompt)"
            )
        ids = ids[-config.context_length :]
    stop_ids = params.stop_token_ids
    if stop_ids is None:
        eot = getattr(tokenizer, "eot_token", None)
        stop_ids = () if eot is None else (eot,)
    detok = None
    if tokenizer is not None:
        detok = IncrementalDetokenizer(tokenizer.token_bytes, params.stop)
    elif params.stop or params.tools:
        what = "stop strings" if params.stop else "tools"
        raise ValueError(f"{what} need a tokenizer to decode text; pass Engine(model, tokenizer)")
    tools = None
    if params.tools:
        tools = ToolUse(params.tools, lambda text: tokenizer.encode(text, disallowed_special=()))
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    processors = params.processors(prompt_length=len(ids))
    return Row(ids, params, detok, frozenset(stop_ids), processors, generator,
               done=params.max_new_tokens == 0, tools=tools)  # fmt: skip
