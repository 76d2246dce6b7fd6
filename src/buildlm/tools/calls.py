"""The tool-call format: how a model asks for a tool, and how the answer comes back.

A model calls a tool by *writing* the call, in plain text tags::

    <tool>calculator: 23*58</tool><result>1334</result> 1334
    ^ the model writes this ─────┘^ the runtime inserts this ^ the model goes on

The model generates ``<tool>NAME: ARGUMENT</tool>``. As soon as the text it generated ends a
call (``</tool>``), the runtime (`buildlm.infer.tool_use`, inside the decode loop) runs the
tool on the argument and feeds the model ``<result>RESULT</result>`` as if it were prompt
text: those tokens are not sampled, and the model then continues, typically by stating the
answer. A bad argument gives ``<result>error: ...</result>`` (the calculator's one-line error),
so the model reads the failure where it would have read a number.

**Why text tags, not special tokens.** The models trained here from scratch have one special
token (``<|endoftext|>``) and a byte-level BPE vocabulary: a new special token would need a new
embedding row, trained from nothing, in a pretrained model. Tags are ordinary text that every
tokenizer can already write (``<tool>`` is 4 tokens of the bundled ``shakespeare-small``
tokenizer), they survive every chat format (the plain transcript included) and they are
matched on the decoded text, so where the tokenizer cuts them never matters. A tool call can
therefore be learned by ordinary SFT on examples that contain it (``instruct-tools``,
`buildlm.data.bundled_tasks`). What special tokens would give (one id per tag, a call that
cannot be forged by text) is not needed here: only the model's own generated text is scanned,
never the prompt, and the only tool is a pure function.

**Training on calls.** In an SFT example, the ``<result>...</result>`` block is the runtime's
text, not the model's: `split_results` cuts it out so that it is tokenized on its own (as the
runtime tokenizes it, so the model sees the same ids in training and use) and carries no loss
(`buildlm.data.instruct`): the model learns to *call* and to *read* the result, never to guess
it.

Tools are named in `TOOLS` (name -> function from the argument text to the result text); a
request enables them by name (``tools=("calculator",)``, ``--tools calculator``) and a call to
any other name gets an error result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from buildlm.tools.calculator import calculate

TOOL_OPEN, TOOL_CLOSE = "<tool>", "</tool>"
RESULT_OPEN, RESULT_CLOSE = "<result>", "</result>"
# The tools a model may call: name -> function(argument text) -> result text (never raises).
TOOLS: dict[str, Callable[[str], str]] = {"calculator": calculate}
MAX_RESULT_CHARS = 256  # a longer result is cut (with "...") before the model reads it


def check_tools(names: Sequence[str] | str | None) -> tuple[str, ...]:
    """``names`` as a tuple of known tool names (``()`` for none); ValueError for others."""
    if names is None:
        return ()
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tool(s) {unknown}; the tools are: {', '.join(TOOLS)}")
    return names


@dataclass(frozen=True)
class ToolCall:
    """A complete call found in text: the tool's name, its argument, and where the call ends
    (the index just after ``</tool>``)."""

    tool: str
    argument: str
    end: int


def format_call(tool: str, argument: str) -> str:
    """``<tool>calculator: 23*58</tool>``."""
    return f"{TOOL_OPEN}{tool}: {argument}{TOOL_CLOSE}"


def format_result(result: str) -> str:
    """``<result>1334</result>``: what the runtime inserts after a call."""
    return f"{RESULT_OPEN}{result}{RESULT_CLOSE}"


def find_call(text: str, start: int = 0) -> ToolCall | None:
    """The first complete call in ``text`` whose ``<tool>`` begins at ``start`` or later."""
    open_at = text.find(TOOL_OPEN, start)
    if open_at < 0:
        return None
    body_at = open_at + len(TOOL_OPEN)
    close_at = text.find(TOOL_CLOSE, body_at)
    if close_at < 0:
        return None
    tool, colon, argument = text[body_at:close_at].partition(":")
    if not colon:  # "<tool>23*58</tool>": no name given
        tool, argument = "", tool
    return ToolCall(tool.strip(), argument.strip(), close_at + len(TOOL_CLOSE))


def run_call(call: ToolCall, enabled: Sequence[str]) -> str:
    """The result text of ``call`` (the tool's answer, or ``"error: ..."``); never raises."""
    if call.tool not in enabled:
        if not call.tool:
            return "error: name the tool before a colon, as in calculator: 2+2"
        if not enabled:
            return "error: no tools are enabled"
        return f"error: no tool named {call.tool!r}; the tools are: {', '.join(enabled)}"
    result = TOOLS[call.tool](call.argument)
    if len(result) > MAX_RESULT_CHARS:
        result = result[: MAX_RESULT_CHARS - 3] + "..."
    return result


def call_and_result(tool: str, argument: str) -> str:
    """A whole exchange as it appears in a transcript: the call, then the tool's result
    (computed now, by the same function the runtime uses)."""
    call = format_call(tool, argument)
    found = find_call(call)
    assert found is not None
    return call + format_result(run_call(found, (tool,)))


def split_results(text: str) -> list[tuple[str, bool]]:
    """``text`` cut into ``(piece, written_by_model)``: each ``<result>...</result>`` block
    that follows a complete call is a piece of its own, marked False (the runtime wrote it).

    ``"a<tool>c: 1</tool><result>1</result>b"`` -> ``[("a<tool>c: 1</tool>", True),
    ("<result>1</result>", False), ("b", True)]``. Pieces join back to ``text``; text without
    calls is one piece.
    """
    pieces: list[tuple[str, bool]] = []
    done = scan = 0
    while (call := find_call(text, scan)) is not None:
        scan = call.end
        if not text.startswith(RESULT_OPEN, call.end):
            continue
        close_at = text.find(RESULT_CLOSE, call.end)
        if close_at < 0:
            break
        end = close_at + len(RESULT_CLOSE)
        pieces += [(text[done : call.end], True), (text[call.end : end], False)]
        done = scan = end
    if done < len(text) or not pieces:
        pieces.append((text[done:], True))
    return pieces


def final_answer(text: str) -> str:
    """What a reply says after its last tool result (the whole reply if it called none),
    stripped: the part exact-match evaluation compares with the expected answer."""
    at = text.rfind(RESULT_CLOSE)
    return (text if at < 0 else text[at + len(RESULT_CLOSE) :]).strip()
