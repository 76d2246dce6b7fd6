"""``buildlm eval``: perplexity, multiple choice, a comparison report, lm-evaluation-harness.

::

    buildlm eval perplexity --model runs/shakespeare --data shakespeare --max-tokens 20000
    buildlm eval choice --model runs/shakespeare --data shakespeare-next-line --limit 200
    buildlm eval report --models runs/a runs/b --out report.md
    buildlm eval harness --model runs/shakespeare --tasks hellaswag --limit 100
    buildlm eval answers --model runs/sft --data instruct-tasks --samples 8 --temperature 0.8

The commands only parse flags and call `buildlm.eval` functions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from buildlm.cli_parser import Parser
from buildlm.eval.pass_at_k import VOTES

SUBCOMMANDS = ("perplexity", "choice", "report", "harness", "answers")


def _device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, then Apple MPS, then CPU) | cpu | cuda | cuda:N | mps"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="buildlm eval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")

    p = sub.add_parser("perplexity", help="sliding-window loss, perplexity and bits per byte")
    p.add_argument("--model", required=True, help="a run, checkpoint or Hugging Face folder")
    p.add_argument("--data", required=True, help="a UTF-8 text file or shakespeare | the-verdict")
    p.add_argument("--context", type=int, default=None, help="window length (default: the model's)")
    p.add_argument("--stride", type=int, default=None, help="window step (default: context / 2)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--max-tokens", type=int, default=None, help="evaluate the first N tokens only")
    p.add_argument("--dtype", default="auto", help="auto | fp32 | bf16 | fp16")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _device_arg(p)

    c = sub.add_parser("choice", help="multiple-choice accuracy (acc, acc_norm)")
    c.add_argument("--model", required=True, help="a run, checkpoint or Hugging Face folder")
    c.add_argument(
        "--data", required=True,
        help="a JSONL file (context, endings, label per line) or shakespeare-next-line",
    )  # fmt: skip
    c.add_argument("--limit", type=int, default=None, help="score the first N items only")
    c.add_argument("--batch-size", type=int, default=16, help="endings per forward pass")
    c.add_argument("--dtype", default="auto", help="auto | fp32 | bf16 | fp16")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    _device_arg(c)

    r = sub.add_parser("report", help="a Markdown table comparing several models")
    r.add_argument("--models", nargs="+", required=True, help="model folders to compare")
    r.add_argument("--data", default="shakespeare", help="text for perplexity ('none' skips)")
    r.add_argument("--choice", default="shakespeare-next-line", help="choice set ('none' skips)")
    r.add_argument("--context", type=int, default=None)
    r.add_argument("--stride", type=int, default=None)
    r.add_argument("--batch-size", type=int, default=4)
    r.add_argument("--max-tokens", type=int, default=8192, help="perplexity on the first N tokens")
    r.add_argument("--limit", type=int, default=200, help="multiple-choice items to score")
    r.add_argument("--out", default=None, help="also write the table to this Markdown file")
    _device_arg(r)

    h = sub.add_parser("harness", help="run lm-evaluation-harness tasks (needs lm_eval)")
    h.add_argument("--model", required=True, help="a run, checkpoint or Hugging Face folder")
    h.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    h.add_argument("--include-path", default=None, help="a folder of custom task YAML files")
    h.add_argument("--limit", type=float, default=None, help="documents per task (or a fraction)")
    h.add_argument("--num-fewshot", type=int, default=None)
    h.add_argument("--batch-size", type=int, default=8)
    h.add_argument("--out", default=None, help="write the full results as JSON here")
    _device_arg(h)
    _answers_parser(sub)
    return parser


def _answers_parser(sub: Any) -> None:
    a = sub.add_parser(
        "answers", help="generated answers checked by a verifier: greedy, pass@k, majority@k"
    )
    a.add_argument("--model", required=True, help="a run, checkpoint or Hugging Face folder")
    a.add_argument(
        "--data", default="instruct-tasks",
        help="instruct-tasks[:add,parity] or a .jsonl/.json/.csv/.tsv file with an output or answer field",
    )  # fmt: skip
    a.add_argument("--split", default="test", help="the split of a bundled set: train | val | test")
    a.add_argument("--template", default="alpaca", help="alpaca | chatml | llama3 | a format string")  # fmt: skip
    a.add_argument(
        "--verifier", default=None,
        help="exact | numeric | numeric-strict (default: the data's own; needed for a file)",
    )  # fmt: skip
    a.add_argument("--limit", type=int, default=None, help="score the first N questions only")
    a.add_argument("--samples", type=int, default=1, help="answers sampled per question (N)")
    a.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (> 0)")
    a.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    a.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    a.add_argument("--seed", type=int, default=0, help="the seed of the samples (repeatable)")
    a.add_argument("--vote", choices=VOTES, default="majority", help="majority: also majority@k")
    a.add_argument("--max-new-tokens", type=int, default=32, help="tokens per answer")
    a.add_argument("--batch-size", type=int, default=64, help="rows (question x sample) per batch")
    a.add_argument("--dtype", default="auto", help="auto | fp32 | bf16 | fp16")
    a.add_argument("--json", action="store_true", help="print the report as JSON")
    a.add_argument("--out", default=None, help="also write the JSON report to this file")
    a.add_argument("--generations", default=None, help="write each answer and verdict (JSONL)")
    _device_arg(a)


_POSITIVE_INTS = (
    "batch_size",
    "limit",
    "max_tokens",
    "context",
    "stride",
    "samples",
    "max_new_tokens",
)


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"--{name} must be at least 1, got {value}")


def main(argv: list[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return
    if args.command != "harness":  # lm-eval checks its own flags
        for name in _POSITIVE_INTS:
            _positive(name.replace("_", "-"), getattr(args, name, None))
    commands = {"perplexity": _perplexity, "choice": _choice, "report": _report, "harness": _harness,
                "answers": _answers}  # fmt: skip
    commands[args.command](args)


def _device(args: argparse.Namespace):
    """The device ``--device`` names (and the ``--dtype``, checked for it), printed on stderr
    as one line, so ``--json`` output on stdout stays JSON."""
    from buildlm.device import check_dtype, choose_device, parse_dtype

    choice = choose_device(args.device)
    dtype = check_dtype(parse_dtype(getattr(args, "dtype", None)), choice.device)
    print(choice.line, file=sys.stderr)
    return choice.device, dtype


def _load(args: argparse.Namespace):
    from buildlm.infer.load import load_model

    return load_model(args.model, *_device(args))


def _perplexity(args: argparse.Namespace) -> None:
    from buildlm.eval.perplexity import evaluate_perplexity
    from buildlm.eval.report import read_text

    text = read_text(args.data)  # before loading the model: a bad path fails at once
    model, tokenizer = _load(args)
    result = evaluate_perplexity(
        model, tokenizer, text, args.context, args.stride, args.batch_size, args.max_tokens,
        progress=not args.json,
    )  # fmt: skip
    if args.json:
        fields = ("loss", "ppl", "bpb", "tokens", "bytes")
        print(json.dumps({f: getattr(result, f) for f in fields}))
        return
    print(
        f"loss {result.loss:.4f} nats/token | perplexity {result.ppl:.3f} | "
        f"bits/byte {result.bpb:.4f} | {result.tokens} tokens, {result.bytes} bytes"
    )


def _choice(args: argparse.Namespace) -> None:
    from buildlm.eval.choice import load_choice_items, score_choices

    items = load_choice_items(args.data, args.limit)
    model, tokenizer = _load(args)
    result = score_choices(model, tokenizer, items, args.batch_size, progress=not args.json)
    if args.json:
        print(
            json.dumps(
                {
                    "acc": result.acc,
                    "acc_norm": result.acc_norm,
                    "n": result.n,
                    "chance": result.chance,
                }
            )
        )
        return
    print(
        f"acc {result.acc:.4f} | acc_norm {result.acc_norm:.4f} | {result.n} items | "
        f"chance {result.chance:.4f} (guessing)"
    )


def _report(args: argparse.Namespace) -> None:
    from buildlm.eval.report import build_report, format_report, write_report

    rows = build_report(
        args.models, args.data, args.choice, args.context, args.stride, args.batch_size,
        args.max_tokens, args.limit, str(_device(args)[0]), progress=True,
    )  # fmt: skip
    table = format_report(rows, args.data, args.choice)
    print(table, end="")
    if args.out:
        write_report(table, args.out)


def _harness(args: argparse.Namespace) -> None:
    try:
        from lm_eval.tasks import TaskManager

        from buildlm.eval.harness import evaluate  # also registers the "buildlm" model
    except ImportError:
        raise ValueError(
            "buildlm eval harness needs lm-evaluation-harness: pip install 'lm_eval>=0.4'"
        ) from None
    device = str(_device(args)[0])
    model_args = {"pretrained": args.model, "device": device, "batch_size": args.batch_size}
    results = evaluate(
        model="buildlm",
        model_args={k: v for k, v in model_args.items() if v is not None},
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
        task_manager=TaskManager(include_path=args.include_path),
        limit=args.limit,
        num_fewshot=args.num_fewshot,
    )
    from lm_eval.utils import make_table

    print(make_table(results))
    if args.out:
        from buildlm.eval.report import write_report

        write_report(json.dumps(results["results"], indent=2, default=str) + "\n", args.out)


def _answers(args: argparse.Namespace) -> None:
    from buildlm.eval.answer_items import answer_items, answer_records
    from buildlm.eval.best_of_n import SamplingConfig, best_of_n_eval, format_best_of_n
    from buildlm.eval.verifiers import verifier_for

    if args.verifier is None and args.data.partition(":")[0] != "instruct-tasks":
        raise ValueError(
            f"name the verifier for {args.data!r}: --verifier exact | numeric | numeric-strict"
        )
    verifier = verifier_for(args.data if args.verifier is None else args.verifier)
    for flag, path in (("--out", args.out), ("--generations", args.generations)):
        if path is not None and os.path.isdir(path):  # found now, not after generating
            raise ValueError(f"{flag} {path!r} is a folder; give a file name")
    config = SamplingConfig(
        args.samples, args.temperature, args.top_p, args.top_k, args.seed, args.max_new_tokens,
        args.batch_size, args.vote,
    )  # fmt: skip
    # the data before the model: bad data fails at once
    records = answer_records(args.data, args.split)
    model, tokenizer = _load(args)
    items = answer_items(records, args.template, tokenizer, args.limit)
    report, rows = best_of_n_eval(model, tokenizer, items, verifier, config)
    report = {"model": str(args.model), "data": args.data, "split": args.split, **report}
    if args.generations:
        from buildlm.data.records import write_jsonl

        write_jsonl(rows, args.generations)
    if args.out:
        from buildlm.eval.report import write_report

        write_report(json.dumps(report, indent=2) + "\n", args.out)
    print(json.dumps(report) if args.json else format_best_of_n(report), end="\n" if args.json else "")  # fmt: skip
