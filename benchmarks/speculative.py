"""Speculative decoding at batch 1 on the CPU: plain vs prompt lookup vs a draft model (issue 24).

The target is the bundled ``shakespeare-small`` (`buildlm.pretrained`); the draft model is a
truncated copy of it: its embeddings, its first ``--draft-layers`` blocks, its final norm and
head (no training; it shares the target's tokenizer by construction). Each mode decodes
``--new-tokens`` tokens after two prompts: a *repetitive* one (a passage given twice, so prompt
lookup finds what comes next) and a *non-repetitive* one (a passage once). Greedy by default
(the three modes then print the same tokens, which is checked), or ``--temperature T`` with a
seed. Runs are interleaved (plain, lookup, draft, plain, ...) over ``--repeats`` rounds, since
the machine may be shared: each line gives the median tokens/s and the median of the per-round
ratios to plain, the acceptance rate (accepted / drafted tokens) and tokens per model pass.

    python benchmarks/speculative.py                 # 200 new tokens, 7 rounds, 1 thread
    python benchmarks/speculative.py --tiny          # a few tokens, one round (CI)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from buildlm.infer.draft_model import DraftModel
from buildlm.infer.engine import Engine
from buildlm.infer.load import load_model
from buildlm.infer.prompt_lookup import PromptLookup
from buildlm.infer.requests import SamplingParams
from buildlm.model import GPT

TARGET = Path(__file__).resolve().parents[1] / "src" / "buildlm" / "pretrained" / "shakespeare-small"

PASSAGE = (
    "KING HENRY:\nOnce more unto the breach, dear friends, once more;\n"
    "Or close the wall up with our English dead.\nIn peace there's nothing so becomes a man\n"
    "As modest stillness and humility:\n"
)
PROMPTS = {
    "repetitive": PASSAGE + "\n" + PASSAGE.split("\n", 1)[0] + "\n",  # the passage, then again
    "non-repetitive": "MENENIUS:\nI tell you, friends, most charitable care\nHave the patricians of you.",
}


def truncated_copy(model: GPT, layers: int) -> GPT:
    """A draft: ``model``'s embeddings, first ``layers`` blocks, final norm and head (copied)."""
    cfg = model.config.to_dict() | {"n_layers": layers}
    cfg.pop("layer_types", None)  # one entry per layer: derived again for the new depth
    draft = GPT(type(model.config).from_dict(cfg)).eval()
    missing, _ = draft.load_state_dict(model.state_dict(), strict=False)
    assert not missing, missing
    return draft


def run(engine: Engine, prompt: str, params: SamplingParams) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    out = engine.generate([prompt], params)[0]
    return time.perf_counter() - t0, out.token_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--draft-tokens", type=int, default=4, help="k: tokens drafted per step")
    parser.add_argument("--draft-layers", type=int, default=2, help="blocks kept in the draft")
    parser.add_argument("--min-ngram", type=int, default=1, help="prompt lookup's shortest match")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--threads", type=int, default=1, help="the model is tiny: one thread is fastest")
    parser.add_argument("--tiny", action="store_true", help="a few tokens, one round (CI)")
    args = parser.parse_args()
    if args.tiny:
        args.new_tokens, args.repeats = 12, 1
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(TARGET)
    draft = truncated_copy(model, args.draft_layers)
    engines = {
        "plain": Engine(model, tokenizer),
        "prompt-lookup": Engine(model, tokenizer, speculative=PromptLookup(args.draft_tokens, min_ngram=args.min_ngram)),
        f"draft ({args.draft_layers} of {model.config.n_layers} layers)": Engine(
            model, tokenizer, speculative=DraftModel(draft, args.draft_tokens)
        ),
    }
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=args.temperature,
                            seed=0, stop_token_ids=())  # fmt: skip
    print(f"shakespeare-small, batch 1, {args.new_tokens} new tokens, k={args.draft_tokens}, "
          f"temperature {args.temperature}, {args.threads} threads, {args.repeats} rounds")  # fmt: skip
    for name, prompt in PROMPTS.items():
        for engine in engines.values():  # warm-up: first-call costs out of the timings
            run(engine, prompt, params)
        times: dict[str, list[float]] = {mode: [] for mode in engines}
        tokens: dict[str, list[int]] = {}
        stats = {}
        for _ in range(args.repeats):
            for mode, engine in engines.items():
                seconds, tokens[mode] = run(engine, prompt, params)
                times[mode].append(seconds)
                stats[mode] = engine.stats
        if args.temperature == 0:
            assert all(t == tokens["plain"] for t in tokens.values()), "greedy outputs differ"
        print(f"{name} prompt ({len(tokenizer.encode(prompt))} tokens):")
        for mode in engines:
            n = len(tokens[mode])
            ratios = [p / s for p, s in zip(times["plain"], times[mode], strict=True)]
            line = (f"  {mode:>24}: {n / statistics.median(times[mode]):7.1f} tok/s, "
                    f"x{statistics.median(ratios):.2f} vs plain")  # fmt: skip
            s = stats[mode]
            if s.draft_tokens:
                line += (f"; acceptance {s.acceptance_rate:.0%} "
                         f"({s.accepted_tokens}/{s.draft_tokens}), "
                         f"{s.decode_tokens / s.decode_steps:.2f} tokens per pass")  # fmt: skip
            print(line)


if __name__ == "__main__":
    main()
