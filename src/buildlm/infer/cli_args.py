"""The command-line flags that ``buildlm generate`` and ``buildlm chat`` share."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from buildlm.infer.engine import Engine
from buildlm.infer.requests import EngineStats, SamplingParams
from buildlm.infer.sampling import DEFAULT_TEMPERATURE
from buildlm.tools.calls import TOOLS


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True,
        help="a run folder (newest checkpoint), a checkpoint folder or a Hugging Face model folder",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto (CUDA, then Apple MPS, then CPU) | cpu | cuda | cuda:N | mps")
    parser.add_argument("--dtype", default="auto", help="auto (the checkpoint's) | fp32 | bf16 | fp16")
    parser.add_argument(
        "--quantize", choices=["int8"], default=None,
        help="weight-only int8 linear layers: about 4x fewer bytes read per token than fp32 "
        "(default: off)",
    )  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="torch.compile the decode step (on a GPU also replayed as a CUDA graph)")
    parser.add_argument(
        "--stats", action="store_true",
        help="print prefill/decode tokens per second, bytes read per token, achieved bandwidth",
    )  # fmt: skip


def add_sampling_args(parser: argparse.ArgumentParser, max_new_tokens: int = 200) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="0 = greedy")
    parser.add_argument(
        "--top-k", type=int, default=None, help="sample from the k likeliest tokens (default: off)"
    )
    parser.add_argument(
        "--top-p", type=float, default=None,
        help="sample from the likeliest tokens whose probabilities sum to p (default: off)",
    )  # fmt: skip
    parser.add_argument(
        "--min-p", type=float, default=None,
        help="drop tokens less likely than min-p times the likeliest one (default: off)",
    )  # fmt: skip
    parser.add_argument(
        "--repetition-penalty", type=float, default=None,
        help="above 1, tokens already in the text are less likely (default: off)",
    )  # fmt: skip
    parser.add_argument("--frequency-penalty", type=float, default=0.0, help="0 = off")
    parser.add_argument("--presence-penalty", type=float, default=0.0, help="0 = off")
    parser.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="fix the sampling for a repeatable output (default: random)")
    add_tools_arg(parser)


def add_tools_arg(parser: argparse.ArgumentParser) -> None:
    """``--tools calculator``: the tools the model may call (`buildlm.infer.tool_use`)."""
    parser.add_argument(
        "--tools", action="append", choices=sorted(TOOLS), default=[],
        help="a tool the model may call while it writes, as <tool>calculator: 23*58</tool>; its "
        "result is fed back as <result>1334</result> (repeatable; default: none)",
    )  # fmt: skip


def sampling_params_from_args(args: argparse.Namespace, **overrides: Any) -> SamplingParams:
    """The `SamplingParams` that the flags of `add_sampling_args` ask for; ``overrides`` win."""
    fields = dict(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
        frequency_penalty=args.frequency_penalty, presence_penalty=args.presence_penalty,
        stop=tuple(args.stop), seed=args.seed, tools=tuple(args.tools),
    )  # fmt: skip
    return SamplingParams(**{**fields, **overrides})


def open_engine(args: argparse.Namespace) -> Engine:
    """Load ``--model`` as the flags say and wrap it in an `Engine`."""
    from buildlm.infer.load import load_model

    device, dtype = device_from_args(args)
    model, tokenizer = load_model(args.model, device, dtype, args.quantize)
    if tokenizer is None:
        raise FileNotFoundError(f"{args.model} has no tokenizer; cannot turn text into ids")
    truncate = getattr(args, "truncate_prompt", False)  # `buildlm generate --truncate-prompt`
    speculative = drafter_from_args(args, model, tokenizer)
    return Engine(model, tokenizer, compile=args.compile, truncate_prompts=truncate,
                  speculative=speculative)  # fmt: skip


def device_from_args(args: argparse.Namespace) -> tuple[torch.device, torch.dtype | None]:
    """The device ``--device`` names (printed on stderr as one line: which, and why) and the
    ``--dtype``, checked to be one that device computes in; ``--compile`` checked too."""
    from buildlm.device import check_compile, check_dtype, choose_device, parse_dtype

    choice = choose_device(args.device)
    dtype = check_dtype(parse_dtype(args.dtype), choice.device)
    if getattr(args, "compile", False):
        check_compile(choice.device)
    print(choice.line, file=sys.stderr)
    return choice.device, dtype


def drafter_from_args(args: argparse.Namespace, model, tokenizer):
    """The drafter ``--draft MODEL`` or ``--prompt-lookup`` asks for (None: plain decoding)."""
    from buildlm.device import parse_dtype
    from buildlm.infer.draft_model import DraftModel
    from buildlm.infer.load import load_model
    from buildlm.infer.prompt_lookup import PromptLookup

    draft, lookup = getattr(args, "draft", None), getattr(args, "prompt_lookup", False)
    if draft is not None and lookup:
        raise ValueError("--draft and --prompt-lookup are two ways to draft; pick one")
    k = getattr(args, "draft_tokens", 4)
    if draft is None and not lookup:
        return None
    if k < 1:
        raise ValueError(f"--draft-tokens must be >= 1, got {k}")
    if lookup:
        return PromptLookup(num_tokens=k)
    device = next(model.parameters()).device
    draft_model, draft_tokenizer = load_model(draft, device, parse_dtype(args.dtype), args.quantize)
    if draft_tokenizer is not None and not _same_tokens(draft_tokenizer, tokenizer):
        raise ValueError(
            f"--draft {draft} has another tokenizer than --model {args.model}; "
            "draft with a model of the same tokenizer"
        )
    return DraftModel(draft_model, num_tokens=k)


def format_stats(stats: EngineStats, model) -> str:
    """One line of throughput and memory-traffic figures for ``--stats``."""
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    weight_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    per_step = stats.decode_s / stats.decode_steps if stats.decode_steps else 0.0
    bandwidth = weight_bytes / per_step / 1e9 if per_step else 0.0
    line = (
        f"[stats] prefill {stats.prefill_tokens} tokens at {stats.prefill_tokens_per_s:,.0f} tok/s; "
        f"decode {stats.decode_tokens} tokens at {stats.decode_tokens_per_s:,.1f} tok/s; "
        f"{weight_bytes / 1e6:,.0f} MB of weights read per step, {bandwidth:.1f} GB/s achieved"
    )
    if stats.draft_tokens:
        line += (
            f"; {stats.accepted_tokens} of {stats.draft_tokens} drafted tokens accepted "
            f"({stats.acceptance_rate:.0%}), {stats.decode_tokens / stats.decode_steps:.2f} "
            "tokens per step"
        )
    return line


def _same_tokens(a, b) -> bool:
    """Whether two tokenizers give every id the same bytes (so their ids mean the same)."""
    return a.vocab_size == b.vocab_size and all(
        a.token_bytes(i) == b.token_bytes(i) for i in range(a.vocab_size)
    )
