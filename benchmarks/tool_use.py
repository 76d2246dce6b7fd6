"""Arithmetic with and without the calculator tool: exact match on held-out questions (issue 22).

Scores the test split of the bundled ``instruct-tools`` questions (200 multi-digit sums,
differences, products, divisions; `buildlm.data.bundled_arith`) three ways:

- ``--arith RUN``: a model fine-tuned on ``instruct-arith`` (the bare answers): the model alone;
- ``--tools RUN`` with the tool off: the tool-trained model must write the result itself;
- ``--tools RUN`` with the tool on: its calls are run and the results fed back
  (`buildlm.infer.tool_use`).

A reply is right when its final answer (after its last ``</result>``, or the whole reply)
equals the exact value. The runs come from (shared 2-core CPU; a few minutes each)::

    buildlm finetune instruct --config instruct --model src/buildlm/pretrained/shakespeare-small \\
        --data instruct-tools --instruct.template $'Q: {input}\\nA: ' --instruct.max_new_tokens 64 \\
        --instruct.tools '[calculator]' --train.max_steps 2500 --train.batch_size 32 --out RUN

(``--data instruct-arith`` and no ``--instruct.tools`` for the baseline). Then::

    python benchmarks/tool_use.py --tools RUN --arith RUN2 [--base src/buildlm/pretrained/shakespeare-small]
    python benchmarks/tool_use.py --tiny   # the bundled model, 10 questions, tool on and off (CI)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from buildlm.data.bundled_tasks import load_bundled
from buildlm.data.records import records_from_dicts
from buildlm.eval.exact_match import exact_match_eval
from buildlm.finetune.instruct import generation_items
from buildlm.infer.load import load_model

TEMPLATE = "Q: {input}\nA: "


def score(path: str, tools: tuple[str, ...], label: str, show: int, limit: int | None = None) -> dict:
    model, tokenizer = load_model(path)
    records = records_from_dicts(load_bundled("instruct-tools")["test"], "instruct-tools/test")
    items = generation_items(records, TEMPLATE, tokenizer, limit=limit, tools=tools)
    t0 = time.perf_counter()
    scores, rows = exact_match_eval(model, tokenizer, items, max_new_tokens=64, batch_size=50)
    seconds = time.perf_counter() - t0
    print(f"{label}: exact match {scores['exact_match']:.1%} of {scores['n']} [{seconds:.1f}s]")
    for row in rows[:show]:
        print(f"    {row['generated']!r}  (expected {row['expected']!r})")
    return {"label": label, "exact_match": scores["exact_match"], "n": scores["n"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", help="run fine-tuned on instruct-tools")
    parser.add_argument("--arith", default=None, help="run fine-tuned on instruct-arith")
    parser.add_argument("--base", default=None, help="the starting model, scored with the tool on")
    parser.add_argument("--show", type=int, default=3, help="replies printed per setting")
    parser.add_argument("--tiny", action="store_true", help="the bundled model, 10 questions (CI)")
    args = parser.parse_args()
    if args.tiny:
        import buildlm

        bundled = str(Path(buildlm.__file__).parent / "pretrained" / "shakespeare-small")
        for tools, label in (((), "bundled model, tool off"), (("calculator",), "bundled model, tool on")):
            score(bundled, tools, label, 1, limit=10)
        return
    if not args.tools:
        parser.error("--tools RUN is needed (or --tiny)")
    results = []
    if args.base:
        results.append(score(args.base, ("calculator",), "base model, tool on", args.show))
    if args.arith:
        results.append(score(args.arith, (), "instruct-arith model (no tool)", args.show))
    results.append(score(args.tools, (), "instruct-tools model, tool off", args.show))
    results.append(score(args.tools, ("calculator",), "instruct-tools model, tool on", args.show))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
