"""Instruction tuning (supervised fine-tuning, SFT): teach a language model to answer.

A pretrained model continues text; an instruction-tuned one answers requests. SFT is ordinary
next-token training on (prompt, response) examples rendered with a template
(`buildlm.data.instruct`), with one change: **the loss counts only the response tokens**.
Targets of prompt tokens and pads are ``-100`` and cross-entropy skips them, so

    loss = mean over response positions t of  -log p(response_t | prompt, response_<t)

The model spends its capacity on producing answers, not on predicting the (often repetitive)
prompts, and prompts of different lengths do not weigh differently.

Batches group examples of similar length (`buildlm.data.batching`), since padding a 20-token
example to 120 tokens wastes 80% of its compute.

Evaluation: validation loss during training, and at the end **exact match** on the test split:
greedy generation (batched, `buildlm.eval.exact_match`) compared with the expected answer,
before and after training, with every generated answer saved to JSONL.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from buildlm.data.instruct import (
    IGNORE,
    Rendered,
    SFTBatch,
    check_template,
    collate_sft,
    make_sft_examples,
    prompt_ids,
    render,
    stop_token_ids,
)
from buildlm.data.records import Record
from buildlm.model.lora import LoRAConfig
from buildlm.tools.calls import check_tools
from buildlm.train.config import TrainConfig
from buildlm.train.task import PaddedExamplesTask


@dataclass
class InstructConfig:
    """How examples become text and how the result is evaluated.

    Args:
        template: alpaca, chatml, llama3, or a format string such as "Q: {instruction}\\nA: ".
        max_length: tokens per example, prompt + response (null: the model's context length);
            longer examples are cut, and examples whose prompt alone fills it are skipped.
        eval_batch_size: examples per validation batch and prompts per generation batch.
        max_new_tokens: tokens generated per test prompt for exact match.
        max_eval_examples: test examples scored by exact match (null: all).
        eval_before: also score the starting model, to show the gain.
        tools: tools the model may call while it answers the test prompts, e.g. [calculator]
            (`buildlm.infer.tool_use`; data that teaches the calls: instruct-tools).
    """

    template: str = "alpaca"
    max_length: int | None = None
    eval_batch_size: int = 64
    max_new_tokens: int = 16
    max_eval_examples: int | None = None
    eval_before: bool = True
    tools: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_template(self.template)
        self.tools = list(check_tools(self.tools))


def response_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, V) and targets (N,) at the N positions whose target is not ``IGNORE``.

    Only those positions carry loss, so only there is the LM head needed: the hidden states
    (B, T, d_model) are gathered first and the head (d_model x vocab, often the biggest matmul
    of a small model) runs on N rows instead of B * T. The result equals selecting from the
    full ``model(x)``.
    """
    mask = y != IGNORE  # (B, T)
    if hasattr(model, "hidden_states") and hasattr(model, "head"):
        hidden = model.hidden_states(x)  # (B, T, d_model)
        return model.head(hidden[mask]), y[mask]  # (N, V), (N,)
    return model(x)[mask], y[mask]


def sft_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions whose target is not ``IGNORE``.

    logits (B, T, V), targets (B, T) -> scalar. The loss is computed in fp32.
    """
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE
    )


class InstructTask(PaddedExamplesTask):
    """Next-token loss on response tokens only; validation loss over response tokens."""

    collate = staticmethod(collate_sft)

    def loss(self, model: nn.Module, batch: SFTBatch) -> torch.Tensor:
        logits, targets = response_logits(model, batch.x, batch.y)  # (N, V), (N,)
        return F.cross_entropy(logits.float(), targets)  # = sft_loss(model(x), y)

    def batch_tokens(self, batch: SFTBatch) -> int:
        return int(batch.x.numel())

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation loss per response token (summed over batches, then divided once)."""
        if self.val_batches is None:
            return {}
        total, count = 0.0, 0
        for batch in self.val_batches.epoch_batches():
            logits, targets = response_logits(model, batch.x, batch.y)
            total += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
            count += len(targets)
        loss = total / max(1, count)
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}

    def describe(self, metrics: dict[str, float]) -> str:
        return f"val loss {metrics['val_loss']:.4f} (response tokens, ppl {metrics['val_ppl']:.2f})"


def render_all(records: list[Record], template: str) -> list[tuple[Rendered, str]]:
    """Every record rendered (errors name the record's file and line)."""
    return [(render(r, template), r.where) for r in records]


def generation_items(
    records: list[Record], template: str, tokenizer: Any, limit: int | None = None, tools: tuple[str, ...] = ()
):
    """The exact-match items of ``records``: prompt ids, expected answer, stop conditions, and
    the ``tools`` the model may call."""
    from buildlm.eval.exact_match import GenerationItem

    items = []
    for r in records[:limit] if limit is not None else records:
        rendered = render(r, template)
        items.append(
            GenerationItem(
                prompt_ids(rendered, tokenizer),
                rendered.answer,
                rendered.stop,
                stop_token_ids(rendered, tokenizer),
                r.where,
                r.data.get("task"),
                tools,
            )
        )
    return items


def score_exact_match(model, tokenizer, items, config: InstructConfig, path, log=print, label="") -> dict[str, Any]:
    """Exact match of ``model`` on ``items``; every generation written to ``path`` (JSONL)."""
    from buildlm.data.records import write_jsonl
    from buildlm.eval.exact_match import exact_match_eval

    t0 = time.perf_counter()
    scores, rows = exact_match_eval(model, tokenizer, items, config.max_new_tokens, config.eval_batch_size)
    write_jsonl(rows, path)
    tasks = scores.get("by_task")
    detail = f" ({', '.join(f'{t} {v:.0%}' for t, v in tasks.items())})" if tasks else ""
    log(f"exact match {label}: {scores['exact_match']:.1%} of {scores['n']}{detail} [{time.perf_counter() - t0:.1f}s]")
    return scores


def run_instruct(
    model_path: str,
    data: Any,
    train: TrainConfig,
    config: InstructConfig,
    lora: LoRAConfig,
    out: str | None = None,
    log=print,
    resume: str | None = None,
):
    """Instruction-tune a model (what ``buildlm finetune instruct`` does); returns a FinetuneResult.

    ``resume=RUN`` continues that run from its newest checkpoint (`FinetuneRun.start`).
    """
    from buildlm.device import seed_everything
    from buildlm.finetune import run as ft

    run = ft.FinetuneRun.start("instruct", model_path, data, train, out, resume=resume, log=log)
    model, tokenizer, splits, run_dir = run.model, run.tokenizer, run.splits, run.run_dir
    rendered = {k: render_all(v, config.template) for k, v in splits.items()}
    max_length = ft.context_limit(config.max_length, model)
    examples, dropped = {}, 0
    for split, items in rendered.items():
        examples[split], n = make_sft_examples(items, tokenizer, max_length)
        dropped += n
    if not examples["train"]:
        raise ValueError(f"every training prompt is longer than max_length={max_length} tokens")
    counts = ", ".join(f"{len(splits[k])} {k}" for k in splits)
    log(f"data: {counts} examples, template {config.template!r}" + (f"; {dropped} skipped (prompt too long)" if dropped else ""))

    seed_everything(train.seed)
    if lora.rank:
        ft.apply_lora(model, lora)
    model.train()
    log(ft.describe_trainable(model))
    test = splits["test"] or splits["val"]
    items = generation_items(test, config.template, tokenizer, config.max_eval_examples, tuple(config.tools))
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"task": "instruct", "template": config.template}
    if items and config.eval_before:
        before = score_exact_match(model, tokenizer, items, config, run_dir / "generations_before.jsonl", log, "before")
        metrics["before"] = before
    task = InstructTask(
        examples["train"], examples["val"], train.batch_size, config.eval_batch_size, train.seed, run.device, run.pad_id
    )
    result = run.train(model, train, task, ft.run_config("instruct", model_path, data, config, lora), log)
    metrics.update(steps=result.step, train_seconds=round(result.seconds, 1), val_loss=result.val_loss)
    if items:
        metrics["after"] = score_exact_match(model, tokenizer, items, config, run_dir / "generations.jsonl", log, "after")
    if lora.rank:
        from buildlm.model.lora import save_lora

        save_lora(model, run_dir / ft.ADAPTER)
    return run.finish(result.checkpoint, metrics, f"buildlm generate --model {run_dir} --prompt ...", log)
