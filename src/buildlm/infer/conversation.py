"""Fitting a conversation into the model's context: drop the oldest turns, cap the reply.

A chat model reads the whole conversation, rendered with its chat format, before every reply,
and the prompt plus the reply must fit ``context_length`` positions. A small model (128
positions) fills that in two or three turns, so a chat that keeps going must forget its oldest
turns. `fit_conversation` decides what to keep:

- the **system messages** at the start are always kept (they say who the assistant is);
- the **newest user message**, and anything after it, is always kept (it is what to answer);
- everything in between is cut into **turns**, a user message with the replies that follow it,
  and whole turns are dropped, oldest first, until the prompt leaves room for the reply. A
  turn is never cut in half: a reply without its question would only confuse the model.

The room left for the reply is at least ``min_new_tokens`` (default: a quarter of the
context, or ``max_new_tokens`` if that is smaller), so history never squeezes the reply to
nothing; the reply budget is then ``max_new_tokens`` capped at whatever the prompt leaves.

If even the system messages and the newest user message leave less than that minimum,
`ConversationTooLong` (a ``ValueError``) says so in one line: the alternative, keeping only the
prompt's last tokens, would silently cut the system message and the chat format's own markup.

Tokens are counted on the real rendered prompt (a ``tokenize`` callable: render with the chat
format, then encode), so every format's markup is counted exactly. The number of prompts
rendered grows with the logarithm of the number of turns (a binary search over how many to
drop), so a long conversation costs a few renders, not one per turn.

Used by ``buildlm chat`` (`buildlm.infer.chat`) and by the server when a request asks for it
(``"trim_history": true``, `buildlm.serve.prompts`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from buildlm.tokenizer.chat_templates import Message


class ConversationTooLong(ValueError):
    """Even the system messages and the newest user message leave too little room to reply."""


@dataclass(frozen=True)
class FittedConversation:
    """A conversation cut to fit: what to render, its ids, the reply budget, what was dropped."""

    messages: list[Message]  # the kept messages, in order (system first)
    prompt_ids: list[int]  # ``tokenize(messages)``: the prompt to generate from
    max_new_tokens: int  # the reply budget: the request's, capped at what the context leaves
    dropped_messages: int  # how many messages were left out (whole turns: user + replies)
    dropped_turns: int  # how many turns those were


def split_turns(
    messages: Sequence[Message],
) -> tuple[list[Message], list[list[Message]], list[Message]]:
    """``(system, turns, newest)``: the leading system messages, the droppable turns (oldest
    first; each a user message and what follows it), and the newest user message onwards."""
    start = 0
    while start < len(messages) and messages[start]["role"] == "system":
        start += 1
    system, rest = list(messages[:start]), list(messages[start:])
    users = [i for i, m in enumerate(rest) if m["role"] == "user"]
    if not users:  # nothing to answer yet: nothing can be dropped either
        return system, [], rest
    last = users[-1]
    turns: list[list[Message]] = []
    for m in rest[:last]:
        if m["role"] == "user" or not turns:  # a reply before any question is a turn of its own
            turns.append([])
        turns[-1].append(m)
    return system, turns, rest[last:]


def fit_conversation(
    messages: Sequence[Message],
    tokenize: Callable[[list[Message]], list[int]],
    context_length: int,
    max_new_tokens: int,
    min_new_tokens: int | None = None,
    max_prompt_tokens: int | None = None,
) -> FittedConversation:
    """Drop the oldest whole turns until the prompt leaves room for a reply; cap the reply.

    ``tokenize(messages)`` must return the ids of the prompt as the model will read it (the
    chat format's rendering with the assistant's header, encoded). ``min_new_tokens`` is the
    room a reply must have (default ``min(max_new_tokens, context_length // 4)``, at least 1
    unless ``max_new_tokens`` is 0); ``max_prompt_tokens`` optionally caps the prompt further
    (a server's limit). Raises `ConversationTooLong` when nothing more can be dropped.
    """
    if context_length < 1:
        raise ValueError(f"context_length must be positive, got {context_length}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if min_new_tokens is None:
        min_new_tokens = min(max_new_tokens, max(1, context_length // 4))
    prompt_room = context_length - min(min_new_tokens, max_new_tokens)
    if max_prompt_tokens is not None:
        prompt_room = min(prompt_room, max_prompt_tokens)
    system, turns, newest = split_turns(messages)

    def attempt(drop: int) -> tuple[list[Message], list[int]]:
        kept = system + [m for turn in turns[drop:] for m in turn] + newest
        return kept, tokenize(kept)

    kept, ids = attempt(0)
    drop = 0
    if len(ids) > prompt_room:
        # Fewer turns -> a shorter prompt; find the fewest drops that fit by bisection.
        kept, ids = attempt(len(turns))
        if len(ids) > prompt_room:
            if max_prompt_tokens is not None and prompt_room == max_prompt_tokens:
                room = f"more than the {max_prompt_tokens} a prompt may have"
            else:
                room = (
                    f"leaving less than {context_length - prompt_room} of the model's "
                    f"context_length={context_length} for a reply"
                )
            raise ConversationTooLong(
                f"the system message and the last user message take {len(ids)} tokens, {room}; "
                "shorten the message"
            )
        low, high = 0, len(turns)  # attempt(low) does not fit, attempt(high) does
        best = (kept, ids)
        while high - low > 1:
            mid = (low + high) // 2
            tried = attempt(mid)
            if len(tried[1]) <= prompt_room:
                high, best = mid, tried
            else:
                low = mid
        drop, (kept, ids) = high, best
    return FittedConversation(
        messages=kept,
        prompt_ids=ids,
        max_new_tokens=min(max_new_tokens, context_length - len(ids)),
        dropped_messages=sum(len(turn) for turn in turns[:drop]),
        dropped_turns=drop,
    )
