"""``buildlm classify --model RUN TEXT...``: label texts with a fine-tuned classifier.

Prints one line per text: the predicted label, its probability and the text. ``--json`` prints
every label's probability as JSON lines instead; ``-`` reads one text per line from stdin.
"""

from __future__ import annotations

import argparse
import json
import sys

from buildlm.cli_parser import Parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="buildlm classify",
        description="Label texts with a classifier trained by `buildlm finetune classify`.",
    )
    parser.add_argument("--model", required=True, help="the classifier's run or checkpoint folder")
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="texts to classify ('-': one per line from stdin)")
    parser.add_argument("--json", action="store_true", help="print JSON lines with every label's probability")
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, then Apple MPS, then CPU) | cpu | cuda | cuda:N | mps"
    )
    return parser


def main(argv: list[str]) -> None:
    from buildlm.device import choose_device
    from buildlm.finetune.classify import classify_texts, load_classifier

    args = build_parser().parse_args(argv)
    texts = []
    for t in args.texts:
        texts += [line for line in sys.stdin.read().splitlines() if line.strip()] if t == "-" else [t]
    if not texts:
        raise ValueError("no text to classify")
    choice = choose_device(args.device)
    print(choice.line, file=sys.stderr)
    clf = load_classifier(args.model, choice.device)
    for row in classify_texts(clf, texts):
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            print(f"{row['label']}\t{row['probability']:.3f}\t{row['text']}")
