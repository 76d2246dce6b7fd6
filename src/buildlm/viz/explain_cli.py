"""``buildlm explain``: print a model as a data-flow trace, and what it predicts for a text.

    buildlm explain                                  # GPT-2 small (124M), every stage
    buildlm explain --preset llama-small --brief     # block 0 in full, the others one line each
    buildlm explain --model runs/<date-time> --text "ROMEO."
    buildlm explain --preset gpt2-124m --text "The capital of France is" --top-k 10

The trace (`buildlm.viz.explain.trace_model`) runs the network on the meta device, so even
GPT-2 XL is traced in a moment without allocating its weights. ``--text`` needs real weights and
a tokenizer: a model folder brings both; a preset is built with random weights (``--seed``)
and uses GPT-2's tokenizer when its vocabulary is GPT-2's (50,257 ids).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from buildlm.cli_parser import Parser
from buildlm.model.config import ModelConfig
from buildlm.model.gpt import GPT
from buildlm.viz.explain import next_token_probabilities, trace_model

GPT2_VOCAB_SIZE = 50257


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="buildlm explain",
        description="Print a model stage by stage: tensor shapes, parameters and FLOPs per "
        "token, with totals; with --text, the tokens and the likeliest next tokens.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--preset",
        help=f"a model preset, built with random weights: {', '.join(ModelConfig.presets())} "
        "(default: gpt2-124m)",
    )
    source.add_argument(
        "--model", help="a run folder, a checkpoint folder or a Hugging Face model folder"
    )
    parser.add_argument("--text", help="a text to tokenize and predict the next token of")
    parser.add_argument("--top-k", type=int, default=5, help="next-token candidates to list")
    parser.add_argument(
        "--seq-len", type=int, default=None,
        help="T for the trace's shapes and attention FLOPs (default: the context length)",
    )  # fmt: skip
    parser.add_argument("--brief", action="store_true", help="print block 0 only, in full")
    parser.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    model, tokenizer, name = _open(args)
    config = model.config
    trace = trace_model(config, args.seq_len)
    t = trace.seq_len
    print(_describe(name, config))
    print(
        f"Trace of one sequence (B=1) of T={t} tokens, run on the meta device (shapes only).\n"
        "FLOPs/token are training FLOPs (forward + backward = 3 x forward), counted like "
        "GPT.flops_per_token.\n"
    )
    print(trace.format(brief=args.brief))
    print()
    print(
        f"parameters: {trace.total_params:,} (GPT.num_params() = {model.num_params():,}; "
        f"without embeddings {model.num_params(non_embedding=True):,})"
    )
    if config.n_experts:  # a mixture of experts: each token uses only its k experts' weights
        print(
            f"active parameters per token: {model.num_params(active=True):,} of "
            f"{model.num_params():,} ({config.n_active_experts} of {config.n_experts} experts)"
        )
    print(
        f"FLOPs per token at T={t}: {trace.total_flops:,} training, "
        f"{trace.total_flops // 3:,} forward (GPT.flops_per_token({t}) = "
        f"{model.flops_per_token(t):,})"
    )
    if args.text is not None:
        print()
        _predict(model, tokenizer, args.text, args.top_k, random_weights=args.model is None)


def _open(args: argparse.Namespace) -> tuple[GPT, Any, str]:
    """(model, tokenizer or None, a name to print) for --preset or --model.

    Without --text a preset is built on the meta device (shapes only, instant at any size).
    """
    if args.model is not None:
        from buildlm.infer.load import load_model

        model, tokenizer = load_model(args.model)
        if not isinstance(model, GPT):
            raise ValueError(f"{args.model} holds a {type(model).__name__}, not a buildlm GPT")
        return model, tokenizer, args.model
    name = args.preset or "gpt2-124m"
    config = ModelConfig.preset(name)
    if args.text is None:
        with torch.device("meta"):
            return GPT(config), None, name
    if config.vocab_size != GPT2_VOCAB_SIZE:
        raise ValueError(
            f"preset {name!r} has vocab_size={config.vocab_size}, which matches no tokenizer "
            f"here (GPT-2's has {GPT2_VOCAB_SIZE}), so --text cannot be tokenized for it; use a "
            "gpt2-* preset, or --model with a trained run folder (it holds its tokenizer)"
        )
    from buildlm.tokenizer import Tokenizer

    torch.manual_seed(args.seed)
    return GPT(config).eval(), Tokenizer.pretrained("gpt2"), name


def _describe(name: str, c: ModelConfig) -> str:
    mlp = f"{c.mlp} MLP of width {c.d_ff}"
    heads = f"{c.n_heads} heads x {c.head_dim} dims ({c.n_kv_heads} key/value heads)"
    head = "tied LM head" if c.tie_embeddings else "separate LM head"
    return (
        f"{name}: {c.n_layers} blocks, d_model {c.d_model}, {heads}, {mlp},\n"
        f"  {c.position} positions, {c.norm} ({c.norm_placement}-LN), {head}, "
        f"vocab {c.vocab_size:,}, context {c.context_length:,}"
    )


def _piece(tokenizer: Any, token_id: int) -> str:
    """A token's text, quoted so spaces and newlines show (a split character shows as U+FFFD)."""
    return repr(tokenizer.token_bytes(token_id).decode("utf-8", errors="replace"))


def _predict(model: GPT, tokenizer: Any, text: str, k: int, random_weights: bool) -> None:
    if tokenizer is None:
        raise FileNotFoundError(
            "this model folder has no tokenizer, so --text cannot be tokenized; use a folder "
            "with tokenizer.json (what `buildlm train` writes)"
        )
    ids = tokenizer.encode(text, allowed_special="all")
    if not ids:
        raise ValueError("--text is empty; give at least one character")
    bad = [i for i in ids if i >= model.config.vocab_size]
    if bad:
        raise ValueError(
            f"the tokenizer gives id {bad[0]}, outside the model's vocabulary of "
            f"{model.config.vocab_size}; the tokenizer does not belong to this model"
        )
    kept = ids[-model.config.context_length :]
    cropped = f", the last {len(kept)} kept (the context length)" if len(kept) < len(ids) else ""
    print(f"text {text!r}: {len(ids)} tokens{cropped}")
    width = max(len(str(i)) for i in kept)
    for pos, token_id in enumerate(kept):
        print(f"  {pos:>4}  {token_id:>{width}}  {_piece(tokenizer, token_id)}")
    noise = " (random weights: noise until trained)" if random_weights else ""
    print(f"\nlikeliest next tokens, softmax of the last position's logits{noise}:")
    top = next_token_probabilities(model, kept, k)
    width = max(len(str(i)) for i, _ in top)
    for rank, (token_id, p) in enumerate(top, 1):
        print(f"  {rank:>3}. {token_id:>{width}}  p={p:.6g}  {_piece(tokenizer, token_id)}")
