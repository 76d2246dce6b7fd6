"""``buildlm eval``: perplexity, multiple choice, a comparison report, lm-evaluation-harness.

::

    buildlm eval perplexity --model runs/shakespeare --data shakespeare --max-tokens 20000
    buildlm eval choice --model runs/shakespeare --data shakespeare-next-line --limit 200
    buildlm eval report --models runs/a runs/b --out report.md
    buildlm eval harness --model runs/shakespeare --tasks hellaswag --limit 100

The commands only parse flags and call `buildlm.eval` functions.
"""

from __future__ import annotations

import argparse
import json

from buildlm.cli_parser import Parser

SUBCOMMANDS = ("perplexity", "choice", "report", "harness")


def _device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")


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
    return parser


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
        for name in ("batch_size", "limit", "max_tokens", "context", "stride"):
            _positive(name.replace("_", "-"), getattr(args, name, None))
    {"perplexity": _perplexity, "choice": _choice, "report": _report, "harness": _harness}[
        args.command
    ](args)


def _load(args: argparse.Namespace):
    from buildlm.device import parse_dtype, resolve_device
    from buildlm.infer.load import load_model

    return load_model(args.model, resolve_device(args.device), parse_dtype(args.dtype))


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
        print(json.dumps({"acc": result.acc, "acc_norm": result.acc_norm, "n": result.n, "chance": result.chance}))
        return
    print(
        f"acc {result.acc:.4f} | acc_norm {result.acc_norm:.4f} | {result.n} items | "
        f"chance {result.chance:.4f} (guessing)"
    )


def _report(args: argparse.Namespace) -> None:
    from buildlm.eval.report import build_report, format_report, write_report

    rows = build_report(
        args.models, args.data, args.choice, args.context, args.stride, args.batch_size,
        args.max_tokens, args.limit, args.device, progress=True,
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
    device = None if args.device == "auto" else args.device
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
