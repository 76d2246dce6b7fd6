"""``buildlm finetune grpo``: a GRPO run from start to end (the task itself is `grpo.GRPOTask`).

1. the starting model (best an instruction-tuned one) and the prompts, formatted with the
   template it was tuned with (`grpo_rollout.make_prompts`); data: the bundled
   ``instruct-tasks`` or a file whose examples have a prompt (``prompt``, ``question``,
   ``instruction`` or ``messages``) and an ``answer``;
2. the verifier (`buildlm.eval.verifiers.verifier_for`), the reference for the KL penalty;
3. greedy accuracy on the test prompts before, training, and after: ``eval.json`` holds both,
   per task, with the replies in ``generations_before.jsonl`` / ``generations.jsonl``.

``resume=RUN`` continues a run from its newest checkpoint with the rollout it was using.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from buildlm.finetune.grpo import SAMPLES, GRPOConfig, GRPOTask, score_prompts
from buildlm.finetune.grpo_rollout import make_prompts
from buildlm.model.lora import LoRAConfig
from buildlm.train.config import TrainConfig


def resolve_verifier(config: GRPOConfig, data: str) -> Any:
    """The verifier ``config.verifier`` names; "auto": the bundled dataset's, numeric for a file."""
    from buildlm.data.bundled_tasks import is_bundled
    from buildlm.eval.verifiers import verifier_for

    name = config.verifier
    if name == "auto":
        name = data if is_bundled(data) else "numeric"
    return verifier_for(name, format_weight=config.format_weight)


def trim_samples(path: Path, step: int) -> None:
    """Drop sample rows written after ``step`` (a resumed run writes them again)."""
    if not path.is_file():
        return
    from buildlm.atomic import atomic_write_text

    keep = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line)["step"] <= step
    ]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _describe(scores: dict[str, Any]) -> str:
    tasks = scores.get("by_task") or {}
    detail = (
        " (" + ", ".join(f"{t} {v['accuracy']:.0%}" for t, v in tasks.items()) + ")"
        if tasks
        else ""
    )
    return f"accuracy {scores['accuracy']:.1%} of {scores['n']}, exact match {scores['exact_match']:.1%}{detail}"


def run_grpo(
    model_path: str,
    data: Any,
    train: TrainConfig,
    config: GRPOConfig,
    lora: LoRAConfig,
    out: str | None = None,
    log=print,
    resume: str | None = None,
):
    """Train with GRPO (what ``buildlm finetune grpo`` does); returns a FinetuneResult."""
    from buildlm.data.records import write_jsonl
    from buildlm.device import seed_everything
    from buildlm.finetune import run as ft
    from buildlm.finetune.dpo import frozen_copy

    run = ft.FinetuneRun.start(
        "grpo", model_path, data, train, out, data_kind="instruct", resume=resume, log=log
    )
    model, tokenizer, run_dir = run.model, run.tokenizer, run.run_dir
    verifier = resolve_verifier(config, data.data)
    max_prompt = model.config.context_length - config.max_new_tokens
    if max_prompt < 1:
        raise ValueError(f"grpo.max_new_tokens={config.max_new_tokens} leaves no room for a prompt in the model's "
                         f"context of {model.config.context_length} tokens; lower it")  # fmt: skip
    prompts, skipped = {}, 0
    for split, records in run.splits.items():
        prompts[split], n = make_prompts(records, config.template, tokenizer, max_prompt)
        skipped += n
    if not prompts["train"]:
        raise ValueError(
            f"every training prompt is longer than {max_prompt} tokens (the context minus grpo.max_new_tokens)"
        )
    counts = ", ".join(f"{len(v)} {k}" for k, v in prompts.items())
    log(f"data: {counts} prompts, template {config.template!r}, verifier {type(verifier).__name__}"
        + (f"; {skipped} skipped (prompt too long)" if skipped else ""))  # fmt: skip

    seed_everything(train.seed)
    reference = None
    if lora.rank:
        ft.apply_lora(model, lora)
    elif config.beta > 0:
        reference = frozen_copy(model)
    model.train()
    log(
        ft.describe_trainable(model)
        + (f"; KL penalty beta={config.beta:g}" if config.beta > 0 else "")
    )
    test = (prompts["test"] or prompts["val"])[: config.max_test_examples]
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"task": "grpo", "verifier": type(verifier).__name__}

    def score(label: str, path: Path) -> dict[str, Any]:
        scores, rows = score_prompts(
            model, tokenizer, test, verifier, config.max_new_tokens, config.eval_batch_size, tuple(config.tools)
        )
        write_jsonl(rows, path)
        log(f"{label}: {_describe(scores)}")
        return scores

    if test and config.eval_before:
        metrics["before"] = score("before", run_dir / "generations_before.jsonl")
    if run.resume_from is not None:
        step = int(run.resume_from.name.rpartition("-")[2])
        trim_samples(run_dir / SAMPLES, step)
    task = GRPOTask(
        model, tokenizer, reference, verifier, prompts["train"], prompts["val"], config, train.seed,
        train.grad_accum_steps, run.pad_id, run_dir / SAMPLES,
    )  # fmt: skip
    result = run.train(
        model, train, task, ft.run_config("grpo", model_path, data, config, lora), log
    )
    metrics.update(steps=result.step, train_seconds=round(result.seconds, 1))
    if test:
        metrics["after"] = score("after", run_dir / "generations.jsonl")
    if lora.rank:
        from buildlm.model.lora import save_lora

        save_lora(model, run_dir / ft.ADAPTER)
    return run.finish(
        result.checkpoint, metrics, f"buildlm generate --model {run_dir} --prompt ...", log
    )
