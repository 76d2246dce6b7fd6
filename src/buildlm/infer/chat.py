"""``buildlm chat``: talk with a model in the terminal, one streamed reply per line you type.

The conversation is rendered with the model's chat format (`chat_format.chat_format_for`)
before every reply, so the model sees the earlier turns, as many as fit: when the prompt and the
reply would outgrow the model's context, the oldest whole turns are left out
(`buildlm.infer.conversation.fit_conversation`; the system message and the newest message are
always kept) and a note on stderr says so once. A reply never runs past the context:
``--max-new-tokens`` (default 256) is capped at the room the prompt leaves.

Keys: Ctrl-C during a reply stops that reply (what was written so far stays in the
conversation) and gives the prompt back; Ctrl-C at the prompt, or end of input (Ctrl-D),
leaves. ``/reset`` starts the conversation over, ``/quit`` leaves.

``--tools calculator`` lets the model call the calculator (`buildlm.infer.tool_use`): a call
it writes (``<tool>calculator: 23*58</tool>``) is run and its result streamed and fed back
(``<result>1334</result>``), and the reply kept in the conversation holds both, so the model
sees its earlier calls in the next turns.

``--seed S`` makes a whole session repeatable: reply ``i`` (counted from 0 over the session,
across ``/reset``) samples with seed ``S + i``, so the same lines typed give the same replies,
while two replies never share one random stream (the same seed every turn would start every
reply with the same draws).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from buildlm.cli_parser import Parser
from buildlm.infer.chat_format import ChatFormat, chat_format_for
from buildlm.infer.cli_args import (
    add_model_args,
    add_sampling_args,
    format_stats,
    open_engine,
    sampling_params_from_args,
)
from buildlm.infer.conversation import ConversationTooLong, fit_conversation
from buildlm.infer.engine import Engine
from buildlm.infer.requests import SamplingParams

DEFAULT_MAX_NEW_TOKENS = 256


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="buildlm chat", description=__doc__.splitlines()[0])
    add_model_args(parser)
    add_sampling_args(parser, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--system", default=None, help="a system message to start with (default: none)")
    return parser


class ChatSession:
    """One terminal conversation: its messages, the turn count (for seeds) and the notes."""

    def __init__(self, engine: Engine, fmt: ChatFormat, params: SamplingParams,
                 system: str | None) -> None:  # fmt: skip
        self.engine = engine
        self.fmt = fmt
        self.params = params
        self.start = [] if system is None else [{"role": "system", "content": system}]
        self.messages = list(self.start)
        self.replies = 0  # replies begun this session: reply i samples with seed + i
        self.told_dropped = False

    def reset(self) -> None:
        self.messages = list(self.start)
        self.told_dropped = False

    def tokenize(self, messages: list) -> list[int]:
        # special tokens only from the template: a typed "<|im_start|>" stays plain text
        return self.fmt.encode(self.engine.tokenizer, messages, add_generation_prompt=True)

    def reply(self, text: str) -> None:
        """Answer ``text``, streaming the reply to stdout; Ctrl-C stops the reply early."""
        context = self.engine.context_length
        try:
            fitted = fit_conversation(
                self.messages + [{"role": "user", "content": text}], self.tokenize, context,
                self.params.max_new_tokens,
            )  # fmt: skip
        except ConversationTooLong as err:
            print(f"(not sent: {err})", file=sys.stderr)
            return
        if fitted.dropped_messages and not self.told_dropped:
            print(f"(older turns dropped to fit the {context}-token context)", file=sys.stderr)
            self.told_dropped = True
        history = fitted.messages[:-1]  # what is kept of the earlier turns
        self.messages = history
        seed = self.params.seed
        if seed is not None:
            seed = (seed + self.replies) % 2**64  # torch seeds are 64-bit
        params = dataclasses.replace(self.params, max_new_tokens=fitted.max_new_tokens, seed=seed)
        self.replies += 1
        pieces: list[str] = []
        stream = self.engine.stream(fitted.prompt_ids, params)
        try:
            for piece in stream:
                pieces.append(piece)
                print(piece, end="", flush=True)
            print(flush=True)
        except KeyboardInterrupt:
            print(flush=True)
            print("(reply stopped)", file=sys.stderr, flush=True)
        finally:
            stream.close()
        reply = "".join(pieces).strip()
        if reply:  # a reply stopped before its first word leaves no turn behind
            self.messages = history + [
                {"role": "user", "content": text},
                {"role": "assistant", "content": reply},
            ]


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    engine = open_engine(args)
    fmt = chat_format_for(engine.tokenizer)
    stop_ids = ()
    if fmt.end_of_turn is not None:
        stop_ids = (engine.tokenizer.special_tokens[fmt.end_of_turn],)
    elif engine.tokenizer.eot_token is not None:
        stop_ids = (engine.tokenizer.eot_token,)
    params = sampling_params_from_args(
        args, stop=tuple(args.stop) + fmt.stop_strings, stop_token_ids=stop_ids
    )
    session = ChatSession(engine, fmt, params, args.system)
    interactive = sys.stdin.isatty()
    print(
        f"chat format: {fmt.name}, context {engine.context_length} tokens. /reset starts over, "
        "/quit (or Ctrl-C at the prompt) leaves; Ctrl-C during a reply stops it.",
        file=sys.stderr,
    )
    try:
        while True:
            if interactive:
                print("> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line or line.strip() == "/quit":
                return
            text = line.rstrip("\n")
            if text.strip() == "/reset":
                session.reset()
                print("(conversation reset)", file=sys.stderr)
                continue
            if not text.strip():
                continue
            session.reply(text)
            if args.stats:
                print(format_stats(engine.stats, engine.model), file=sys.stderr)
    except KeyboardInterrupt:  # Ctrl-C at the prompt (or a second one while a reply stops)
        print(file=sys.stderr)
