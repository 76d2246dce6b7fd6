"""``buildlm chat``: talk with a model in the terminal, one streamed reply per line you type.

The whole conversation is rendered with the model's chat format (`chat_format.chat_format_for`)
before every reply, so the model sees every earlier turn. ``/reset`` starts over, ``/quit``
(or end of input) leaves.
"""

from __future__ import annotations

import argparse
import sys

from buildlm.infer.chat_format import chat_format_for
from buildlm.infer.cli_args import (
    add_model_args,
    add_sampling_args,
    format_stats,
    open_engine,
    sampling_params,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="buildlm chat", description=__doc__.splitlines()[0])
    add_model_args(parser)
    add_sampling_args(parser, max_new_tokens=256)
    parser.add_argument("--system", default=None, help="a system message to start with")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    engine = open_engine(args)
    fmt = chat_format_for(engine.tokenizer)
    stop_ids = ()
    if fmt.end_of_turn is not None:
        stop_ids = (engine.tokenizer.special_tokens[fmt.end_of_turn],)
    elif engine.tokenizer.eot_token is not None:
        stop_ids = (engine.tokenizer.eot_token,)
    params = sampling_params(
        args, stop=tuple(args.stop) + fmt.stop_strings, stop_token_ids=stop_ids
    )
    start = [] if args.system is None else [{"role": "system", "content": args.system}]
    messages = list(start)
    interactive = sys.stdin.isatty()
    print(f"chat format: {fmt.name}. /reset starts over, /quit leaves.", file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/quit":
            return
        text = line.rstrip("\n")
        if text.strip() == "/reset":
            messages = list(start)
            print("(conversation reset)", file=sys.stderr)
            continue
        if not text.strip():
            continue
        messages.append({"role": "user", "content": text})
        prompt = fmt.encode(engine.tokenizer, messages, add_generation_prompt=True)
        reply = []
        for piece in engine.stream(prompt, params):
            reply.append(piece)
            print(piece, end="", flush=True)
        print(flush=True)
        messages.append({"role": "assistant", "content": "".join(reply).strip()})
        if args.stats:
            print(format_stats(engine.stats, engine.model), file=sys.stderr)
