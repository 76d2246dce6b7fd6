"""Tool calls inside the decode loop: a row pauses, the tool runs, its result is fed in.

A request that enables tools (``SamplingParams(tools=("calculator",))``) gets a `ToolUse` on
its `buildlm.infer.row.Row`. After each token the row's decoded text is scanned for a complete
call (``<tool>calculator: 23*58</tool>``, the format of `buildlm.tools.calls`); when one ends,
the tool runs at once and the ids of ``<result>1334</result>`` are queued. From the next step
on, the row's sampled token is replaced by the next queued id (`DecodeBatch.advance`), one per
step, until the queue is empty: the result is *fed* to the model like prompt text, never
sampled, and then the model goes on from it. Nothing else in the batch changes: the other rows
keep sampling, and a row without tools never has a queue.

Feeding the result one token per step (rather than prefilling it in one pass) keeps the batch's
shapes and its step exactly as they are, so the same code serves the growing batch of the
server, the fixed-shape (CUDA-graph) steps of `Engine.generate` on a GPU and the sliding
window; a result is a handful of tokens.

The result's tokens are part of the completion (its text shows the call and its result, as a
stream does) and count towards ``max_new_tokens`` like any token that takes room in the
context; `inserted` lists their positions, so a trainer (GRPO) can leave them out of a loss.
Only the generated text is scanned, never the prompt; a call is run once, and at most
`MAX_CALLS` per row (a model stuck in a loop of calls then gets an error result).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from buildlm.tools.calls import find_call, format_result, run_call

MAX_CALLS = 16  # tool calls one row may make; later calls get an error result


@dataclass
class ToolUse:
    """One row's tool state: the tools it may call, where the next call may begin in its
    generated text, and the result ids still to feed.

    ``encode`` turns result text into ids (the tokenizer's, ordinary text only: a result
    can never become a special token).
    """

    tools: tuple[str, ...]
    encode: Callable[[str], list[int]]
    scan_from: int = 0  # index in the generated text where the next call may start
    queue: deque[int] = field(default_factory=deque)  # result ids still to feed
    calls: int = 0

    @property
    def feeding(self) -> bool:
        """Whether a result is being fed (the row's next token is not sampled)."""
        return bool(self.queue)

    def next_token(self) -> int:
        """The next result id to feed (call only while `feeding`)."""
        return self.queue.popleft()

    def scan(self, text: str) -> str | None:
        """Look for a call that ``text`` (all generated so far) has just completed; if there is
        one, run it, queue its result's ids and return the result text (else None)."""
        call = find_call(text, self.scan_from)
        if call is None:
            return None
        self.scan_from = call.end
        self.calls += 1
        if self.calls > MAX_CALLS:
            result = f"error: more than {MAX_CALLS} tool calls in one reply"
        else:
            result = run_call(call, self.tools)
        text = format_result(result)
        self.queue.extend(self.encode(text))
        return text
