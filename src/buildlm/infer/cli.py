"""``buildlm generate``: continue a prompt with a trained (or downloaded) model and print the text."""

from __future__ import annotations

import argparse
import sys

from buildlm.cli_parser import Parser
from buildlm.infer.cli_args import (
    add_model_args,
    add_sampling_args,
    format_stats,
    open_engine,
    sampling_params_from_args,
)

SAMPLES_PER_BATCH = 64
"""Samples decoded together; more are decoded batch after batch."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="buildlm generate",
        description="Generate text from a checkpoint, run or Hugging Face model folder.",
    )
    add_model_args(parser)
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    add_sampling_args(parser)
    parser.add_argument("--num-samples", type=int, default=1, help=f"completions, decoded in batches of {SAMPLES_PER_BATCH}")
    parser.add_argument(
        "--stop-at-eot", action="store_true", help="stop at the tokenizer's end-of-text token"
    )
    parser.add_argument("--no-stream", action="store_true", help="print each sample when done")
    parser.add_argument(
        "--draft", default=None, metavar="MODEL",
        help="speculative decoding: a smaller model with the same tokenizer guesses tokens, the "
        "model checks them in one pass (same output, faster when the guesses are right; default: none)",
    )  # fmt: skip
    parser.add_argument(
        "--prompt-lookup", action="store_true",
        help="speculative decoding with guesses copied from the text itself (no second model; "
        "fast on repetitive text; default: off)",
    )  # fmt: skip
    parser.add_argument(
        "--draft-tokens", type=int, default=4,
        help="tokens guessed per step with --draft or --prompt-lookup (default: 4)",
    )  # fmt: skip
    parser.add_argument(
        "--truncate-prompt", action="store_true",
        help="keep the end of a prompt longer than the model's context instead of refusing it",
    )  # fmt: skip
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    engine = open_engine(args)
    params = sampling_params_from_args(args, stop_token_ids=None if args.stop_at_eot else ())
    if args.num_samples == 1 and not args.no_stream:
        pieces = engine.stream(args.prompt, params)
        first = next(pieces, "")  # a prompt the engine refuses fails here, before it is echoed
        print(args.prompt + first, end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)
        print()
    else:
        # One seed per sample, so a batch of samples is as repeatable as one sample. Samples are
        # decoded SAMPLES_PER_BATCH at a time, so memory stays bounded however many are asked.
        for first in range(0, args.num_samples, SAMPLES_PER_BATCH):
            batch = range(first, min(first + SAMPLES_PER_BATCH, args.num_samples))
            seeds = [None if args.seed is None else args.seed + i for i in batch]
            per_sample = [sampling_params_from_args(args, stop_token_ids=params.stop_token_ids, seed=s) for s in seeds]
            for i, out in zip(batch, engine.generate([args.prompt] * len(batch), per_sample), strict=True):
                if args.num_samples > 1:
                    print(f"--- sample {i + 1} ---")
                print(args.prompt + out.text, flush=True)
    if args.stats:
        print(format_stats(engine.stats, engine.model), file=sys.stderr)
