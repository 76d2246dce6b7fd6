"""Preference tuning with DPO (Direct Preference Optimization, Rafailov et al., 2023).

The data are pairs: a prompt x, a *chosen* answer y_c and a *rejected* one y_r. RLHF would fit a
reward model to such pairs, then run reinforcement learning against it. DPO skips both: it shows
that the optimal policy of that RL problem satisfies

    reward(x, y) = beta * log( pi(y | x) / pi_ref(y | x) )  (+ a term that cancels in pairs)

so the policy itself *is* a reward model, and fitting it to the preferences is one classification
loss per pair::

    loss = -log sigmoid( beta * [ (log pi(y_c|x) - log pi_ref(y_c|x))
                                 - (log pi(y_r|x) - log pi_ref(y_r|x)) ] )

- log pi(y|x) is the sum of the log-probabilities of the answer's tokens (the prompt's are
  masked, as in SFT);
- pi_ref is the **frozen reference** (the starting model, usually after SFT). The loss only cares
  how much *more* the policy likes y_c than the reference does, relative to y_r, which keeps the
  policy close to the reference (``beta`` sets how close: small beta lets it move further);
- the *implicit rewards* r = beta * (log pi - log pi_ref) give the figures to watch: the
  **reward margin** r_c - r_r (0 at the start, since policy == reference, and growing), and the
  **reward accuracy**, the share of pairs with r_c > r_r.

At the start policy == reference, every margin is 0 and the loss is log 2 = 0.693.

With LoRA the reference costs no memory: it is the same network with its adapters switched off
(`buildlm.model.lora.lora_disabled`). Without LoRA it is a frozen copy of the starting model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from buildlm.data.batching import ExampleBatches
from buildlm.data.instruct import (
    IGNORE,
    SFTBatch,
    SFTExample,
    check_template,
    collate_sft,
    encode_rendered,
    render,
)
from buildlm.data.records import Record
from buildlm.model.lora import LoRAConfig, lora_disabled, lora_modules
from buildlm.train.config import TrainConfig
from buildlm.train.task import PaddedExamplesTask


@dataclass
class DPOConfig:
    """DPO settings.

    Args:
        beta: strength of the pull toward the reference (0.1 is the paper's usual value).
        template: alpaca, chatml, llama3 or a format string (as for instruction tuning).
        max_length: tokens per prompt + answer (null: the model's context length).
        eval_batch_size: pairs per evaluation batch.
    """

    beta: float = 0.1
    template: str = "alpaca"
    max_length: int | None = None
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"dpo.beta must be positive, got {self.beta}")
        check_template(self.template)


# --- the loss -------------------------------------------------------------------------------


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of log p(target) over the positions whose target is not ``IGNORE``.

    logits (N, T, V), targets (N, T) -> (N,), in fp32.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (N, T, V)
    mask = targets != IGNORE
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N, T)
    return (picked * mask).sum(dim=-1)


def model_sequence_logprobs(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`sequence_logprobs` of ``model(x)``, computing logits only at the answer positions. (N,)"""
    from buildlm.finetune.instruct import response_logits

    logits, targets = response_logits(model, x, y)  # (M, V), (M,) over all rows' answer tokens
    picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (M,)
    rows = (y != IGNORE).nonzero()[:, 0]  # (M,): the row of each answer token (row-major, as the mask)
    return torch.zeros(x.shape[0], device=x.device, dtype=picked.dtype).index_add(0, rows, picked)


@dataclass
class DPOOutput:
    """The mean loss and the per-pair implicit rewards (N,)."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> DPOOutput:
    """The DPO loss from sequence log-probabilities, each (N,)."""
    chosen = beta * (policy_chosen - ref_chosen)  # (N,) implicit rewards
    rejected = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return DPOOutput(loss, chosen.detach(), rejected.detach())


# --- data -----------------------------------------------------------------------------------


@dataclass
class PreferencePair:
    """Token ids and targets of prompt + chosen and prompt + rejected (prompt targets ``IGNORE``)."""

    chosen_ids: list[int]
    chosen_labels: list[int]
    rejected_ids: list[int]
    rejected_labels: list[int]
    where: str = ""
    group: str | None = None  # the example's "task" field, for per-task figures


PairBatch = SFTBatch  # x (2B, T), y (2B, T): the B chosen sequences, then the B rejected


def make_pairs(
    records: list[Record], template: str, tokenizer: Any, max_length: int
) -> tuple[list[PreferencePair], int]:
    """Tokenized pairs, cut to ``max_length + 1`` ids; returns them and how many were skipped."""
    pairs, skipped = [], 0
    for r in records:
        chosen = encode_rendered(render(r, template, "chosen", train_history=False), tokenizer)
        rejected = encode_rendered(render(r, template, "rejected", train_history=False), tokenizer)
        if chosen[2] >= max_length:  # the prompt alone fills the window
            skipped += 1
            continue
        n = max_length + 1
        group = r.data.get("task") if isinstance(r.data.get("task"), str) else None
        pairs.append(PreferencePair(chosen[0][:n], chosen[1][:n], rejected[0][:n], rejected[1][:n], r.where, group))
    return pairs, skipped


def collate_pairs(pairs: list[PreferencePair], pad_id: int = 0) -> PairBatch:
    """One SFT-shaped batch, x (2B, T) and y (2B, T): the B chosen sequences first, then the B
    rejected ones, shifted and right-padded to one width as `collate_sft` does."""
    chosen = [SFTExample(p.chosen_ids, p.chosen_labels) for p in pairs]
    rejected = [SFTExample(p.rejected_ids, p.rejected_labels) for p in pairs]
    return collate_sft(chosen + rejected, pad_id)


# --- the task -------------------------------------------------------------------------------


class DPOTask(PaddedExamplesTask):
    """DPO on preference pairs against a frozen reference.

    ``reference=None`` means: the policy's own network with its LoRA adapters switched off
    (the policy must have LoRA layers then).
    """

    collate = staticmethod(collate_pairs)

    @staticmethod
    def length(pair: PreferencePair) -> int:
        return max(len(pair.chosen_ids), len(pair.rejected_ids))

    def __init__(
        self,
        policy: nn.Module,
        reference: nn.Module | None,
        train: list[PreferencePair],
        val: list[PreferencePair] | None,
        beta: float,
        batch_size: int,
        eval_batch_size: int = 64,
        seed: int = 0,
        device: str | torch.device = "cpu",
        pad_id: int = 0,
    ) -> None:
        if reference is None and not any(True for _ in lora_modules(policy)):
            raise ValueError("DPO needs a reference model, or a policy with LoRA adapters to switch off")
        self.policy = policy
        self.reference = reference
        self.beta = beta
        super().__init__(train, val, batch_size, eval_batch_size, seed, device, pad_id)

    @torch.no_grad()
    def reference_logprobs(self, batch: PairBatch) -> torch.Tensor:
        """log pi_ref of each sequence (2B,), in eval mode (no dropout)."""
        if self.reference is not None:
            return model_sequence_logprobs(self.reference, batch.x, batch.y)
        was_training = self.policy.training
        self.policy.eval()
        try:
            with lora_disabled(self.policy):
                return model_sequence_logprobs(self.policy, batch.x, batch.y)
        finally:
            self.policy.train(was_training)

    def forward(self, model: nn.Module, batch: PairBatch) -> DPOOutput:
        ref = self.reference_logprobs(batch)  # (2B,)
        pol = model_sequence_logprobs(model, batch.x, batch.y)  # (2B,), one forward for both halves
        n = batch.x.shape[0] // 2
        return dpo_loss(pol[:n], pol[n:], ref[:n], ref[n:], self.beta)

    def loss(self, model: nn.Module, batch: PairBatch) -> torch.Tensor:
        return self.forward(model, batch).loss

    def batch_tokens(self, batch: PairBatch) -> int:
        return int(batch.x.numel())

    @torch.no_grad()
    def pair_margins(self, model: nn.Module, batches: ExampleBatches) -> tuple[list[float], list[bool]]:
        """Per pair, in example order: the reward margin, and whether log pi(chosen) > log pi(rejected)."""
        margins = [0.0] * len(batches.examples)
        prefers = [False] * len(batches.examples)
        for k in range(batches.num_batches):
            batch = batches.batch_at(k)
            ref = self.reference_logprobs(batch)
            pol = model_sequence_logprobs(model, batch.x, batch.y)
            n = batch.x.shape[0] // 2
            out = dpo_loss(pol[:n], pol[n:], ref[:n], ref[n:], self.beta)
            for j, i in enumerate(batches.indices_at(k).tolist()):
                margins[i], prefers[i] = float(out.margins[j]), bool(pol[j] > pol[n + j])
        return margins, prefers

    @staticmethod
    def summarize(margins: list[float], prefers: list[bool]) -> dict[str, float]:
        """The DPO loss, mean reward margin, reward accuracy and preference rate of some pairs."""
        losses = -F.logsigmoid(torch.tensor(margins, dtype=torch.float64))
        return {
            "val_loss": float(losses.mean()),
            "reward_margin": sum(margins) / len(margins),
            "reward_accuracy": sum(m > 0 for m in margins) / len(margins),
            "prefers_chosen": sum(prefers) / len(prefers),
        }

    def evaluate(self, model: nn.Module, batches: ExampleBatches | None = None) -> dict[str, Any]:
        """Loss, reward margin, reward accuracy, how often the policy itself prefers the chosen
        answer, and the same per group (the examples' ``task`` field) when there are groups."""
        batches = batches or self.val_batches
        if batches is None:
            return {}
        margins, prefers = self.pair_margins(model, batches)
        out: dict[str, Any] = self.summarize(margins, prefers)
        groups = sorted({p.group for p in batches.examples if p.group})
        if groups:
            out["by_task"] = {}
            for g in groups:
                idx = [i for i, p in enumerate(batches.examples) if p.group == g]
                out["by_task"][g] = self.summarize([margins[i] for i in idx], [prefers[i] for i in idx])
        return out

    def describe(self, m: dict[str, float]) -> str:
        return (
            f"val loss {m['val_loss']:.4f}, reward margin {m['reward_margin']:+.3f}, "
            f"reward accuracy {m['reward_accuracy']:.1%}, prefers chosen {m['prefers_chosen']:.1%}"
        )


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy with every parameter frozen, in eval mode: the DPO reference."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()


def run_dpo(
    model_path: str,
    data: Any,
    train: TrainConfig,
    config: DPOConfig,
    lora: LoRAConfig,
    out: str | None = None,
    log=print,
    resume: str | None = None,
):
    """Preference-tune a model with DPO (what ``buildlm finetune dpo`` does); returns a FinetuneResult.

    ``resume=RUN`` continues that run from its newest checkpoint (`FinetuneRun.start`).
    """
    from buildlm.device import seed_everything
    from buildlm.finetune import run as ft

    run = ft.FinetuneRun.start("dpo", model_path, data, train, out, resume=resume, log=log)
    model, tokenizer, splits, device = run.model, run.tokenizer, run.splits, run.device
    max_length = ft.context_limit(config.max_length, model)
    pairs, skipped = {}, 0
    for split, records in splits.items():
        pairs[split], n = make_pairs(records, config.template, tokenizer, max_length)
        skipped += n
    if not pairs["train"]:
        raise ValueError(f"every training prompt is longer than max_length={max_length} tokens")
    counts = ", ".join(f"{len(v)} {k}" for k, v in pairs.items())
    log(f"data: {counts} preference pairs, template {config.template!r}" + (f"; {skipped} skipped" if skipped else ""))

    seed_everything(train.seed)
    reference = None
    if lora.rank:
        ft.apply_lora(model, lora)
    else:
        reference = frozen_copy(model)
    model.train()
    log(ft.describe_trainable(model) + ("; reference: the base without adapters" if reference is None else "; reference: a frozen copy"))
    task = DPOTask(
        model, reference, pairs["train"], pairs["val"], config.beta, train.batch_size,
        config.eval_batch_size, train.seed, device, run.pad_id,
    )  # fmt: skip
    test_pairs = pairs["test"] or pairs["val"]
    test = None
    if test_pairs:
        test = ExampleBatches(test_pairs, task.train_batches.collate, config.eval_batch_size, shuffle=False, device=device)
    metrics: dict[str, Any] = {"task": "dpo", "beta": config.beta}
    if test is not None:
        model.eval()
        metrics["before"] = task.evaluate(model, test)
        log(f"before: {task.describe(metrics['before'])}")
    run_cfg = ft.run_config("dpo", model_path, data, config, lora)
    result = run.train(model, train, task, run_cfg, log)
    metrics.update(steps=result.step, train_seconds=round(result.seconds, 1))
    if test is not None:
        model.eval()
        metrics["after"] = task.evaluate(model, test)
        log(f"after: {task.describe(metrics['after'])}")
        for name, m in metrics["after"].get("by_task", {}).items():
            was = metrics["before"]["by_task"][name]["prefers_chosen"]
            log(f"  {name}: reward margin {m['reward_margin']:+.3f}, reward accuracy {m['reward_accuracy']:.0%}, "
                f"prefers chosen {was:.0%} -> {m['prefers_chosen']:.0%}")  # fmt: skip
    if lora.rank:
        from buildlm.model.lora import save_lora

        save_lora(model, run.run_dir / ft.ADAPTER)
    return run.finish(result.checkpoint, metrics, log=log)
