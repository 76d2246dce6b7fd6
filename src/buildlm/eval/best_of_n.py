"""Inference-time scaling: accuracy against the number of sampled answers per question.

For every question the model answers once greedily and N times by sampling; a verifier
(`buildlm.eval.verifiers`) parses and checks each answer. The report shows, for k = 1, 2, 4,
... N, pass@k (any of k samples right: best-of-N with a checker) and majority@k (the most
common of k answers: self-consistency), both defined in `buildlm.eval.pass_at_k`, next to
greedy accuracy. Whether sampling more helps, and how much a verifier is worth over voting,
is then one table.

Generation is batched through `buildlm.infer.Engine`: the N samples of a question are N rows
of a batch, each with its own seed (`sample_seed`, derived from ``--seed``, the question's
position and the sample's), so a run is repeatable and a row's tokens do not depend on which
other rows share its batch.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from buildlm.eval.exact_match import GenerationItem, generate_answers
from buildlm.eval.pass_at_k import VOTES, k_values, majority_at_k, majority_vote, pass_at_k
from buildlm.eval.verifiers import Verifier


@dataclass
class SamplingConfig:
    """How the N answers per question are sampled.

    Args:
        samples: answers sampled per question (N); pass@k and majority@k for k up to N.
        temperature: sampling temperature (> 0; the greedy answer is scored apart).
        top_p: nucleus sampling: keep the fewest tokens whose probability reaches top_p.
        top_k: keep the k most likely tokens.
        seed: the seed every sample's own seed is derived from.
        max_new_tokens: tokens generated per answer.
        batch_size: rows (question x sample) per batch.
        vote: ``majority`` reports majority@k (self-consistency); ``none`` skips it.
    """

    samples: int = 8
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int = 0
    max_new_tokens: int = 32
    batch_size: int = 64
    vote: str = "majority"

    def __post_init__(self) -> None:
        if self.samples < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("samples, batch size and max new tokens must be at least 1")
        if not self.temperature > 0:
            raise ValueError(
                f"sampling needs a temperature above 0, got {self.temperature} (greedy is scored apart)"
            )
        if self.vote not in VOTES:
            raise ValueError(f"unknown vote {self.vote!r}; choose one of {', '.join(VOTES)}")


def sample_seed(seed: int, question: int, sample: int) -> int:
    """A 63-bit seed for one sample, the same on every machine (independent of batching)."""
    digest = hashlib.blake2b(f"{seed}/{question}/{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def sample_answers(
    model: nn.Module, tokenizer: Any, items: Sequence[GenerationItem], config: SamplingConfig
) -> list[list[str]]:
    """``config.samples`` sampled completions of every item's prompt: ``out[item][sample]``."""
    from buildlm.infer.engine import Engine
    from buildlm.infer.requests import SamplingParams

    was_training = model.training
    engine = Engine(model, tokenizer, truncate_prompts=True)
    order = sorted(range(len(items)), key=lambda i: len(items[i].prompt_ids))
    rows = ((i, j) for i in order for j in range(config.samples))  # lazily: N may be large
    out: list[list[str]] = [[] for _ in items]
    while chunk := list(itertools.islice(rows, config.batch_size)):
        params = [
            SamplingParams(
                max_new_tokens=config.max_new_tokens,
                temperature=config.temperature,
                top_p=config.top_p,
                top_k=config.top_k,
                stop=tuple(items[i].stop),
                stop_token_ids=tuple(items[i].stop_token_ids),
                seed=sample_seed(config.seed, i, j),
            )
            for i, j in chunk
        ]
        completions = engine.generate([items[i].prompt_ids for i, _ in chunk], params)
        for (i, _), completion in zip(chunk, completions, strict=True):
            out[i].append(completion.text)  # rows come in sample order
    model.train(was_training)
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def best_of_n_eval(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[GenerationItem],
    verifier: Verifier,
    config: SamplingConfig,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(report, rows): greedy accuracy, pass@k and majority@k, overall and per task; one row
    per question with every answer, its parsed form and verdict."""
    if not items:
        raise ValueError("no examples to evaluate")
    greedy = generate_answers(model, tokenizer, items, config.max_new_tokens, config.batch_size)
    sampled = sample_answers(model, tokenizer, items, config)
    n, ks = config.samples, k_values(config.samples)
    rows = []
    for item, first, samples in zip(items, greedy, sampled, strict=True):
        prompt = tokenizer.decode(item.prompt_ids)
        g = verifier.score(prompt, first, item.answer)
        verdicts = [verifier.score(prompt, s, item.answer) for s in samples]
        parsed = [v.parsed for v in verdicts]
        correct = [v.correct for v in verdicts]
        c = sum(correct)
        row: dict[str, Any] = {
            "where": item.where, "task": item.task, "expected": item.answer,
            "greedy": first, "greedy_parsed": g.parsed, "greedy_correct": g.correct,
            "samples": samples, "parsed": parsed, "correct": correct,
            "format_ok": sum(v.format_ok for v in verdicts) / n,
            "pass@k": {k: pass_at_k(n, c, k) for k in ks},
        }  # fmt: skip
        if config.vote == "majority":
            vote = majority_vote(parsed)
            row["vote"] = vote
            row["vote_correct"] = any(
                p == vote and ok for p, ok in zip(parsed, correct, strict=True)
            )
            row["majority@k"] = {k: majority_at_k(parsed, correct, k) for k in ks}
        rows.append(row)
    report = {
        "verifier": verifier.name, "n": len(rows), "samples": n,
        "temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k, "seed": config.seed,
        **_scores(rows, ks, config.vote),
    }  # fmt: skip
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["task"] is not None:
            by_task[row["task"]].append(row)
    if by_task:
        report["by_task"] = {t: _scores(r, ks, config.vote) for t, r in sorted(by_task.items())}
    return report, rows


def _scores(rows: list[dict[str, Any]], ks: list[int], vote: str) -> dict[str, Any]:
    """Greedy accuracy and, per k, the mean pass@k and majority@k over ``rows``."""
    by_k = []
    for k in ks:
        entry = {"k": k, "pass@k": _mean([r["pass@k"][k] for r in rows])}
        if vote == "majority":
            entry["majority@k"] = _mean([r["majority@k"][k] for r in rows])
        by_k.append(entry)
    return {
        "greedy": _mean([r["greedy_correct"] for r in rows]),
        "format_ok": _mean([r["format_ok"] for r in rows]),
        "by_k": by_k,
    }


def format_best_of_n(report: dict[str, Any]) -> str:
    """The report as text: one line per k, then the largest k per task."""
    has_vote = "majority@k" in report["by_k"][0]
    lines = [
        f"{report['n']} questions, {report['samples']} samples each (temperature {report['temperature']}, "
        f"top_p {report['top_p']}, top_k {report['top_k']}, seed {report['seed']}), verifier {report['verifier']}",
        f"greedy {report['greedy']:.1%} | answers in the requested form {report['format_ok']:.1%} of samples",
        f"{'k':>5}  {'pass@k':>8}" + (f"  {'majority@k':>10}" if has_vote else ""),
    ]
    for e in report["by_k"]:
        lines.append(
            f"{e['k']:>5}  {e['pass@k']:>8.1%}"
            + (f"  {e['majority@k']:>10.1%}" if has_vote else "")
        )
    if "by_task" in report:
        k = report["by_k"][-1]["k"]
        lines.append(f"per task (greedy | pass@{k}" + (f" | majority@{k})" if has_vote else ")"))
        for task, s in report["by_task"].items():
            last = s["by_k"][-1]
            vote = f" | {last['majority@k']:.1%}" if has_vote else ""
            lines.append(f"  {task:<10} {s['greedy']:.1%} | {last['pass@k']:.1%}{vote}")
    return "\n".join(lines) + "\n"
