"""GRPO's rollouts: prompts in, sampled completions, their rewards and log-probabilities out.

A *rollout* is the experience one optimisation step learns from:

1. **prompts**, formatted exactly as instruction tuning formatted them (`buildlm.data.instruct`:
   the same template, pieces tokenized the same way), so an SFT model sees the ids it was
   trained on;
2. **sampling**: G completions per prompt from the current policy with `buildlm.infer.Engine`
   (temperature, top-p; one batched call; every completion seeded, so a run repeats exactly);
   a completion that ended on a stop token keeps that token: choosing to stop was an action
   too, and the model must learn when to;
3. **rewards** from a verifier (`buildlm.eval.verifiers`) and group advantages
   (`grpo_loss.group_advantages`);
4. **tensors**: prompt + completion, right-padded, with targets only on completion tokens
   (``IGNORE`` elsewhere, as in SFT), so one teacher-forced forward pass of a model gives the
   log-probability of every sampled token (`token_logprobs`).

This file knows nothing of the Trainer; `buildlm.finetune.grpo` drives it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from buildlm.data.instruct import IGNORE, prompt_ids, render, stop_token_ids
from buildlm.data.records import Record


@dataclass
class GRPOPrompt:
    """One training or test prompt: its ids, text, expected answer, stops and labels."""

    ids: list[int]
    text: str
    answer: str
    stop: list[str]
    stop_ids: list[int]
    task: str | None = None
    where: str = ""


ANSWER_FIELDS = ("answer", "output")
PROMPT_FIELDS = ("instruction", "prompt", "question")


def _as_instruction(record: Record) -> tuple[Record, str]:
    """The record with an ``instruction`` (from prompt/question) and the name of its answer field."""
    data = dict(record.data)
    answer = next((f for f in ANSWER_FIELDS if data.get(f) is not None), None)
    if answer is None:
        raise ValueError(
            f"{record.where}: a GRPO example needs an 'answer' (or 'output') field to check replies against"
        )
    if "messages" not in data and "instruction" not in data:
        given = next((f for f in PROMPT_FIELDS if data.get(f) is not None), None)
        if given is None:
            raise ValueError(
                f"{record.where}: a GRPO example needs a 'prompt', 'question', 'instruction' or 'messages' field"
            )
        data["instruction"] = data[given]
    return Record(data, record.where), answer


def make_prompts(
    records: Sequence[Record], template: str, tokenizer: Any, max_prompt_length: int
) -> tuple[list[GRPOPrompt], int]:
    """The prompts of ``records`` under ``template``; and how many were skipped as too long."""
    out, skipped = [], 0
    for r in records:
        record, answer_field = _as_instruction(r)
        rendered = render(record, template, response_field=answer_field)
        ids = prompt_ids(rendered, tokenizer)
        if len(ids) > max_prompt_length:
            skipped += 1
            continue
        text = "".join(piece for piece, _ in rendered.prompt)
        out.append(
            GRPOPrompt(
                ids,
                text,
                rendered.answer,
                list(rendered.stop),
                stop_token_ids(rendered, tokenizer),
                record.data.get("task"),
                record.where,
            )  # fmt: skip
        )
    return out, skipped


def sample_completions(
    engine: Any,
    prompts: Sequence[GRPOPrompt],
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float | None,
    seed: int,
    tools: tuple[str, ...] = (),
) -> list[list[Any]]:
    """``group_size`` sampled `Completion`s per prompt, in one batched Engine call.

    Completion g of prompt p is seeded with ``seed + p * group_size + g``: its tokens do not
    depend on what else is in the batch, or on the global random state. With ``tools`` the
    model may call them (`buildlm.infer.tool_use`); ``Completion.inserted`` marks the results.
    """
    from buildlm.infer.requests import SamplingParams

    requests, params = [], []
    for p, prompt in enumerate(prompts):
        for g in range(group_size):
            requests.append(prompt.ids)
            params.append(
                SamplingParams(
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    stop=tuple(prompt.stop),
                    stop_token_ids=tuple(prompt.stop_ids),
                    seed=seed + p * group_size + g,
                    tools=tools,
                )  # fmt: skip
            )
    completions = engine.generate(requests, params)
    return [completions[p * group_size : (p + 1) * group_size] for p in range(len(prompts))]


def completion_ids(completion: Any) -> list[int]:
    """The sampled tokens of a completion, with the stop token that ended it."""
    ids = list(completion.token_ids)
    if completion.stop_token_id is not None:
        ids.append(int(completion.stop_token_id))
    return ids


@dataclass
class RolloutBatch:
    """Sampled completions as tensors, with everything a loss needs (B = prompts x group size).

    x (B, T) input ids, right-padded; y (B, T) the next token where it is a completion token,
    ``IGNORE`` elsewhere; advantages, rewards, correct, format_ok, lengths: (B,);
    old_logp, ref_logp (B, T): log-probabilities of the targets under the sampling policy and
    the reference (0 off the completion; None until computed, or without a reference);
    num_tokens: completion tokens of the whole step (all its micro-batches), the loss's divisor.
    """

    x: torch.Tensor
    y: torch.Tensor
    advantages: torch.Tensor
    rewards: torch.Tensor
    correct: torch.Tensor
    format_ok: torch.Tensor
    lengths: torch.Tensor
    num_tokens: int = 0
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        return self.y != IGNORE  # (B, T)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers (a checkpoint's ``trainer_state.pt`` loads them safely)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RolloutBatch:
        return cls(**state)


def collate_rollout(
    prompts: Sequence[GRPOPrompt], groups: Sequence[Sequence[Any]], pad_id: int, context_length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, T), y (B, T) and completion lengths (B,) of every prompt's group, in order.

    Row = prompt ids + completion ids (cut to ``context_length + 1`` tokens); x = row[:-1],
    y = row[1:] with the prompt's targets set to ``IGNORE``, and so are the tokens a tool's
    result inserted (``Completion.inserted``): the model read them, it did not choose them.
    """
    rows, starts, inserted = [], [], []
    for prompt, group in zip(prompts, groups, strict=True):
        for completion in group:
            rows.append((list(prompt.ids) + completion_ids(completion))[: context_length + 1])
            starts.append(len(prompt.ids))
            inserted.append(getattr(completion, "inserted", ()))
    width = max(len(r) for r in rows) - 1
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    y = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    lengths = torch.zeros(len(rows), dtype=torch.long)
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        n = len(row) - 1
        x[i, :n] = torch.tensor(row[:-1])
        y[i, start - 1 : n] = torch.tensor(row[start:])  # target t is token t + 1
        for j in inserted[i]:  # completion token j is the target at start - 1 + j
            if start - 1 + j < n:
                y[i, start - 1 + j] = IGNORE
        lengths[i] = len(row) - start
    return x, y, lengths


def token_logprobs(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log p(y_t | x_<=t) under ``model`` at every completion position; 0 elsewhere. (B, T), fp32.

    One teacher-forced forward pass; the LM head runs only where a target is
    (`buildlm.finetune.instruct.response_logits`). ``temperature`` divides the logits as
    sampling did, so the probabilities are those of the distribution the tokens were drawn from
    (top-p's cut is not applied: the usual approximation).
    """
    from buildlm.finetune.instruct import response_logits

    logits, targets = response_logits(model, x, y)  # (M, V), (M,)
    picked = (
        torch.log_softmax(logits.float() / temperature, dim=-1)
        .gather(-1, targets.unsqueeze(-1))
        .squeeze(-1)
    )  # (M,)
    out = torch.zeros(y.shape, dtype=picked.dtype, device=picked.device)
    return out.masked_scatter(y != IGNORE, picked)  # row-major, as the mask selected them
