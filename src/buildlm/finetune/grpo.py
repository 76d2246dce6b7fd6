"""Reinforcement learning with verifiable rewards: GRPO as a fine-tuning task.

Instruction tuning shows the model the right answer; GRPO lets it *try*. Each step:

1. take ``prompts_per_step`` prompts; sample ``group_size`` completions of each from the
   current policy (`grpo_rollout`);
2. score every completion with a verifier (`buildlm.eval.verifiers`: is the answer right, is it
   in the requested form) and turn the rewards into advantages within each group
   (`grpo_loss.group_advantages`);
3. store the log-probabilities of the sampled tokens under the policy that sampled them (and
   under the frozen reference, when ``beta`` > 0);
4. take ``passes_per_batch`` optimizer steps on those samples with the clipped, token-averaged
   objective (`grpo_loss.clipped_policy_loss`); then sample again.

The model only learns from groups where some completions did better than others, so GRPO needs
a starting model that is *sometimes* right: an SFT model (`buildlm finetune instruct`), not a
base model that never produces the answer format.

Here it is a `buildlm.train.task.Task`: its batch stream (`RolloutStream`) samples a new
rollout every ``passes_per_batch`` steps and hands the same one out in between, so the
`Trainer` runs it unchanged (schedule, clipping, LoRA, checkpoints). The rollout in use is part
of the stream's state, so ``--resume`` continues exactly, even between two passes over it.
Each step's figures (reward, accuracy, KL, clip fraction, completion length) go to
metrics.csv and beside the progress bar; a few sampled completions go to ``samples.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from buildlm.data.instruct import check_template
from buildlm.finetune.grpo_loss import ADVANTAGES, clipped_policy_loss, group_advantages
from buildlm.finetune.grpo_rollout import (
    GRPOPrompt,
    RolloutBatch,
    collate_rollout,
    completion_ids,
    sample_completions,
    token_logprobs,
)
from buildlm.model.lora import lora_disabled, lora_modules
from buildlm.tools.calls import check_tools

SAMPLES = "samples.jsonl"


@dataclass
class GRPOConfig:
    """GRPO settings (reinforcement learning against a verifier).

    Args:
        group_size: completions sampled per prompt (G); advantages compare them (>= 2).
        prompts_per_step: prompts per micro-batch (each step samples prompts_per_step x
            group_size completions per micro-batch; --train.batch_size is not used).
        max_new_tokens: tokens sampled per completion.
        temperature: sampling temperature (> 0: a group needs different completions); the
            log-probabilities in the loss use the same temperature.
        top_p: nucleus sampling (1.0: off).
        advantage: "mean_std" (reward minus the group's mean, over its std: GRPO) or "mean"
            (minus the mean only: Dr. GRPO).
        eps_low: the ratio's lower clip, 1 - eps_low.
        eps_high: the ratio's upper clip, 1 + eps_high (above eps_low: DAPO's clip-higher).
        beta: weight of the k3 KL penalty against the frozen starting model (0: none, and no
            reference is kept).
        passes_per_batch: optimizer steps on each batch of samples before sampling again.
        verifier: how replies are checked: exact, numeric, numeric-strict, or "auto" (the
            bundled dataset's own; numeric for a file).
        format_weight: reward for a reply in the requested form, added to correctness.
        template: alpaca, chatml, llama3 or a format string: the one the starting model was
            instruction-tuned with.
        eval_batch_size: prompts per greedy evaluation batch.
        max_eval_examples: validation prompts scored at each evaluation (null: all).
        max_test_examples: test prompts scored before and after training (null: all).
        eval_before: also score the starting model on the test prompts.
        log_samples: sampled completions written to samples.jsonl per rollout.
        tools: tools the model may call while it answers, e.g. [calculator]: the tool loop runs
            in the rollouts and in the evaluations; the results it inserts are fed to the
            model, not chosen by it, so they carry no loss (`buildlm.infer.tool_use`).
    """

    group_size: int = 8
    prompts_per_step: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    advantage: str = "mean_std"
    eps_low: float = 0.2
    eps_high: float = 0.28
    beta: float = 0.0
    passes_per_batch: int = 1
    verifier: str = "auto"
    format_weight: float = 0.0
    template: str = "alpaca"
    eval_batch_size: int = 64
    max_eval_examples: int | None = 64
    max_test_examples: int | None = None
    eval_before: bool = True
    log_samples: int = 2
    tools: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tools = list(check_tools(self.tools))
        for name in (
            "group_size",
            "prompts_per_step",
            "max_new_tokens",
            "passes_per_batch",
            "eval_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"grpo.{name} must be at least 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError(
                "grpo.group_size must be at least 2: advantages compare completions of one prompt"
            )
        if self.temperature <= 0:
            raise ValueError(
                f"grpo.temperature must be positive (sampling), got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"grpo.top_p must lie in (0, 1], got {self.top_p}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(
                f"grpo.advantage must be one of {', '.join(ADVANTAGES)}, got {self.advantage!r}"
            )
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0):
            raise ValueError(
                f"grpo.eps_low must lie in [0, 1) and eps_high be >= 0, got {self.eps_low}, {self.eps_high}"
            )
        if self.beta < 0:
            raise ValueError(f"grpo.beta must be >= 0, got {self.beta}")
        check_template(self.template)


class RolloutStream:
    """The Trainer's batch stream: a fresh rollout every ``passes`` steps, the same one between.

    Call ``k`` of ``next`` is micro-batch ``k % accum`` of optimizer step ``k // accum``. The
    first call of every ``passes``-th step samples all ``accum`` micro-batches of a new rollout
    (``make(generation)``); the others reuse them. The saved state holds the rollout in use.
    """

    def __init__(
        self, make: Callable[[int], list[RolloutBatch]], passes: int, accum: int, seed: int
    ) -> None:
        self.make, self.passes, self.accum, self.seed = make, passes, accum, seed
        self.step = 0
        self.batches: list[RolloutBatch] = []

    def __iter__(self) -> RolloutStream:
        return self

    def __next__(self) -> RolloutBatch:
        step, micro = divmod(self.step, self.accum)
        if micro == 0 and step % self.passes == 0:
            self.batches = self.make(step // self.passes)
        self.step += 1
        return self.batches[micro]

    def batch_at(self, step: int) -> RolloutBatch:
        raise TypeError(
            "GRPO batches are sampled from the policy as it trains; they cannot be recomputed"
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "step": self.step,
            "rollout": [b.state_dict() for b in self.batches],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"the saved run used seed {int(state['seed'])}, this one {self.seed}; resume with the same seed"
            )
        self.step = int(state["step"])
        self.batches = [RolloutBatch.from_state(b) for b in state["rollout"]]


class GRPOTask:
    """Samples, scores and learns (see the module docstring); a `buildlm.train.task.Task`.

    ``reference``: the frozen starting model for the KL penalty, or None: with ``beta`` > 0
    that means the policy with its LoRA adapters switched off. ``verifier``: an object with
    ``score(prompt, completion, answer)`` returning a verdict (reward, correct, format_ok).
    """

    def __init__(
        self,
        policy: nn.Module,
        tokenizer: Any,
        reference: nn.Module | None,
        verifier: Any,
        train: Sequence[GRPOPrompt],
        val: Sequence[GRPOPrompt] | None,
        config: GRPOConfig,
        seed: int = 0,
        grad_accum_steps: int = 1,
        pad_id: int = 0,
        samples_path: Path | None = None,
    ) -> None:
        if config.beta > 0 and reference is None and not any(True for _ in lora_modules(policy)):
            raise ValueError(
                "a KL penalty (grpo.beta > 0) needs a reference model, or a policy with LoRA adapters"
            )
        self.policy, self.tokenizer, self.reference, self.verifier = (
            policy,
            tokenizer,
            reference,
            verifier,
        )
        self.prompts, self.config, self.seed, self.pad_id = list(train), config, seed, pad_id
        self.val = list(val or [])[: config.max_eval_examples]
        self.samples_path = samples_path
        self.train_batches = RolloutStream(
            self.rollout, config.passes_per_batch, grad_accum_steps, seed
        )
        self.val_batches = self.val or None  # the Trainer evaluates when this is not None
        self._engine = None
        self._sums: dict[str, float] = {}

    # --- sampling -------------------------------------------------------------------------------

    def prompt_at(self, index: int) -> GRPOPrompt:
        """Prompt ``index`` of an endless sequence of seeded shuffles of the training prompts."""
        epoch, i = divmod(index, len(self.prompts))
        order = torch.randperm(
            len(self.prompts), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        )
        return self.prompts[int(order[i])]

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from buildlm.infer.engine import Engine

            self._engine = Engine(self.policy, self.tokenizer, arrange_weights=False)
        return self._engine

    @torch.no_grad()
    def rollout(self, generation: int) -> list[RolloutBatch]:
        """Sample, score and tensorise the micro-batches of rollout ``generation``."""
        cfg, accum = self.config, self.train_batches.accum
        per_micro = cfg.prompts_per_step
        first = generation * accum * per_micro
        prompts = [self.prompt_at(first + k) for k in range(accum * per_micro)]
        was_training = self.policy.training
        groups = sample_completions(
            self.engine, prompts, cfg.group_size, cfg.max_new_tokens, cfg.temperature,
            cfg.top_p if cfg.top_p < 1 else None, seed=self.seed * 1_000_003 + generation * len(prompts) * cfg.group_size,
            tools=tuple(cfg.tools),
        )  # fmt: skip
        self.policy.train(was_training)
        verdicts = [
            [self.verifier.score(p.text, c.text, p.answer) for c in g]
            for p, g in zip(prompts, groups, strict=True)
        ]
        rewards = torch.tensor(
            [[v.reward for v in vs] for vs in verdicts], dtype=torch.float32
        )  # (P, G)
        advantages = group_advantages(rewards, cfg.advantage)  # (P, G)
        self.write_samples(generation, prompts, groups, verdicts)
        device = next(self.policy.parameters()).device
        batches = []
        for m in range(accum):
            part = slice(m * per_micro, (m + 1) * per_micro)
            x, y, lengths = collate_rollout(
                prompts[part], groups[part], self.pad_id, self.policy.config.context_length
            )
            flat = [v for vs in verdicts[part] for v in vs]
            batch = RolloutBatch(
                x.to(device), y.to(device), advantages[part].reshape(-1).to(device), rewards[part].reshape(-1),
                torch.tensor([v.correct for v in flat]), torch.tensor([v.format_ok for v in flat]), lengths,
            )  # fmt: skip
            if cfg.beta > 0:
                batch.ref_logp = self.reference_logprobs(batch)
            batches.append(batch)
        total = sum(int(b.mask.sum()) for b in batches)
        for b in batches:
            b.num_tokens = total
        return batches

    def reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """Log-probabilities of the sampled tokens under the frozen reference (B, T)."""
        if self.reference is not None:
            return token_logprobs(self.reference, batch.x, batch.y, self.config.temperature)
        was_training = self.policy.training
        self.policy.eval()
        try:
            with lora_disabled(self.policy):
                return token_logprobs(self.policy, batch.x, batch.y, self.config.temperature)
        finally:
            self.policy.train(was_training)

    def write_samples(self, generation: int, prompts, groups, verdicts) -> None:
        """The first ``log_samples`` completions of this rollout, appended to samples.jsonl."""
        if self.samples_path is None or self.config.log_samples <= 0:
            return
        step = generation * self.config.passes_per_batch + 1  # the first step that learns from it
        rows = []
        for p, g, vs in zip(prompts, groups, verdicts, strict=True):
            for c, v in zip(g, vs, strict=True):
                if len(rows) < self.config.log_samples:
                    rows.append({"step": step, "prompt": p.text, "completion": c.text, "answer": p.answer,
                                 "reward": v.reward, "correct": bool(v.correct), "tokens": len(completion_ids(c))})  # fmt: skip
        self.samples_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.samples_path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    # --- the loss -------------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: RolloutBatch) -> torch.Tensor:
        """The clipped, token-averaged objective (and the KL penalty) of one micro-batch.

        On the first pass over a rollout the policy is the one that sampled it: its
        log-probabilities, detached, are stored as the "old" ones (every ratio is exactly 1).
        The loss is multiplied by the step's micro-batch count, which the Trainer divides by:
        the step's gradient is that of the sum over all its completion tokens / their number.
        """
        stream, cfg = self.train_batches, self.config
        if (stream.step - 1) % stream.accum == 0:  # the first micro-batch of a step
            self._sums = {}
        logp = token_logprobs(model, batch.x, batch.y, cfg.temperature)  # (B, T), as sampled
        if batch.old_logp is None:
            batch.old_logp = logp.detach()
        out = clipped_policy_loss(
            logp, batch.old_logp, batch.advantages, batch.mask, cfg.eps_low, cfg.eps_high,
            batch.ref_logp, cfg.beta, num_tokens=batch.num_tokens,
        )  # fmt: skip
        for key, value in (
            ("clip_fraction", out.clip_fraction),
            ("kl", out.kl),
            ("ratio", out.ratio),
        ):
            self._sums[key] = self._sums.get(key, 0.0) + float(value) * out.tokens
        self._sums["tokens"] = self._sums.get("tokens", 0.0) + out.tokens
        return out.loss * stream.accum

    def batch_tokens(self, batch: RolloutBatch) -> int:
        return int(batch.x.numel())

    def step_metrics(self) -> dict[str, float]:
        """The last step's figures for metrics.csv and the progress bar."""
        batches = self.train_batches.batches
        if not batches:
            return {}
        rewards = torch.cat([b.rewards for b in batches])
        out = {
            "reward": float(rewards.mean()),
            "accuracy": float(torch.cat([b.correct for b in batches]).float().mean()),
            "format_ok": float(torch.cat([b.format_ok for b in batches]).float().mean()),
            "completion_length": float(torch.cat([b.lengths for b in batches]).float().mean()),
            "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        }
        n = max(self._sums.get("tokens", 0.0), 1.0)
        out.update({k: self._sums.get(k, 0.0) / n for k in ("kl", "clip_fraction", "ratio")})
        return out

    # --- evaluation -----------------------------------------------------------------------------

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """Greedy replies to the validation prompts, checked by the verifier."""
        if not self.val:
            return {}
        scores, _ = score_prompts(model, self.tokenizer, self.val, self.verifier, self.config.max_new_tokens,
                                  self.config.eval_batch_size, tuple(self.config.tools))  # fmt: skip
        return {"val_accuracy": scores["accuracy"], "val_reward": scores["reward"]}

    def describe(self, m: dict[str, float]) -> str:
        return f"val accuracy {m['val_accuracy']:.1%}, reward {m['val_reward']:.3f} (greedy)"


def score_prompts(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[GRPOPrompt],
    verifier: Any,
    max_new_tokens: int,
    batch_size: int,
    tools: tuple[str, ...] = (),
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(scores, rows): greedy replies checked by ``verifier`` (accuracy, reward) and by exact
    match (`buildlm.eval.exact_match`, as instruction tuning reports it), overall and per task."""
    from buildlm.eval.exact_match import GenerationItem, exact_match, generate_answers

    items = [GenerationItem(p.ids, p.answer, p.stop, p.stop_ids, p.where, p.task, tools) for p in prompts]
    replies = generate_answers(model, tokenizer, items, max_new_tokens, batch_size)
    rows = []
    for p, text in zip(prompts, replies, strict=True):
        v = verifier.score(p.text, text, p.answer)
        rows.append({"where": p.where, "task": p.task, "expected": p.answer, "generated": text, "reward": v.reward,
                     "correct": bool(v.correct), "exact_match": exact_match(text, p.answer)})  # fmt: skip

    def summary(part: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(part)
        return {"accuracy": sum(r["correct"] for r in part) / n, "exact_match": sum(r["exact_match"] for r in part) / n,
                "reward": sum(r["reward"] for r in part) / n, "n": n}  # fmt: skip

    scores = summary(rows)
    tasks = sorted({r["task"] for r in rows if r["task"]})
    if tasks:
        scores["by_task"] = {t: summary([r for r in rows if r["task"] == t]) for t in tasks}
    return scores, rows
