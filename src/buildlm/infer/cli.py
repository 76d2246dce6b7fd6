"""``buildlm generate``: continue a prompt with a trained checkpoint and print the text."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buildlm generate",
        description="Generate text from a checkpoint folder (config.json + model.safetensors + tokenizer.json).",
    )
    parser.add_argument(
        "--model", required=True, help="a run folder (its newest checkpoint is used) or a checkpoint folder"
    )
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None, help="fix the sampling for a repeatable output")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--stop-at-eot", action="store_true", help="stop at <|endoftext|>")
    return parser


def main(argv: list[str]) -> None:
    import torch

    from buildlm.infer import generate
    from buildlm.train.checkpoint import load_checkpoint
    from buildlm.train.trainer import resolve_device

    args = build_parser().parse_args(argv)
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    device = resolve_device(args.device)
    loaded = load_checkpoint(args.model, device=device)
    tokenizer = loaded.tokenizer
    if tokenizer is None:
        raise FileNotFoundError(f"{loaded.path} has no tokenizer.json; cannot turn the prompt into ids")
    ids = tokenizer.encode(args.prompt, allowed_special="all")
    if not ids:
        raise ValueError("the prompt is empty; pass some text with --prompt")
    idx = torch.tensor([ids] * args.num_samples, dtype=torch.long, device=device)  # (N, T)
    out = generate(
        loaded.model,
        idx,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        eos_id=tokenizer.eot_token if args.stop_at_eot else None,
        seed=args.seed,
    )
    for i, row in enumerate(out.tolist()):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        if args.stop_at_eot and tokenizer.eot_token in row[len(ids) :]:
            row = row[: len(ids) + row[len(ids) :].index(tokenizer.eot_token)]
        print(tokenizer.decode(row))
