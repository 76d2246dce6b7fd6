"""The optimizer (AdamW with two parameter groups) and the learning-rate schedule.

Weight decay pulls weights toward zero each step, a regulariser. It makes sense for the big
matrices that mix features (linear layers, embeddings): with dim >= 2 they hold almost all the
parameters. Biases and the gains of LayerNorm/RMSNorm are 1-D: decaying a norm gain toward zero
would shrink the signal and decaying biases buys nothing, so they get no decay. That is
nanoGPT's rule ("every parameter with dim >= 2 decays"), and the one used here.

The schedule: a linear *warmup* from ~0 to ``lr`` over ``warmup_steps`` (Adam's moment estimates
are noisy at the start; big steps then can wreck the random initial network), then a *cosine*
decay from ``lr`` down to ``min_lr`` at ``max_steps``, flat afterwards. Decaying the rate lets
the model settle into a minimum once the fast early progress is over.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from buildlm.train.muon import Muon, muon_param_groups


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: parameters with ``dim >= 2`` decay, the 1-D ones (biases, norms) do not.

    Tied weights (the embedding shared with the output head) appear once, under their first name.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # named_parameters() already skips shared duplicates
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def decay_parameter_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """The names in each group (decay, no decay): to print and to test."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(name)
    return decay, no_decay


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    device_type: str = "cpu",
    fused: bool | None = None,
    optimizer: str = "adamw",
    muon_lr: float = 0.02,
    muon_momentum: float = 0.95,
) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups`, using the fastest implementation the device has; or,
    with ``optimizer="muon"``, `buildlm.train.muon.Muon` (Muon for the hidden matrices at
    ``muon_lr``, AdamW for the rest at ``lr``).

    ``fused`` (one kernel updates every tensor) is fastest where PyTorch provides it (CUDA, and
    CPU in recent releases); ``foreach`` (a few batched ops over lists of tensors) is the
    fallback; the per-parameter loop is the slowest. ``fused=None`` chooses automatically.
    """
    if optimizer == "muon":
        groups = muon_param_groups(model, lr, muon_lr, weight_decay)
        ns_dtype = torch.bfloat16 if device_type == "cuda" else None
        return Muon(groups, lr=lr, betas=betas, eps=eps, momentum=muon_momentum, ns_dtype=ns_dtype)
    if optimizer != "adamw":
        raise ValueError(f"unknown optimizer {optimizer!r}; choose adamw or muon")
    groups = param_groups(model, weight_decay)
    kwargs: dict[str, Any] = dict(lr=lr, betas=betas, eps=eps)
    if fused is None:
        fused = device_type in ("cuda", "cpu", "mps")
    if fused:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError, TypeError):
            pass  # this device or dtype has no fused kernel: fall back to foreach
    return torch.optim.AdamW(groups, foreach=True, **kwargs)


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """The learning rate for optimizer step ``step`` (0-based).

    Warmup: ``lr * (step + 1) / warmup_steps`` for the first ``warmup_steps`` steps (never zero,
    so step 0 already learns). Then cosine from ``lr`` to ``min_lr`` over the remaining steps,
    and ``min_lr`` from ``max_steps`` on.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)  # 0 -> 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return min_lr + coeff * (lr - min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write ``lr`` into every parameter group (the schedule is applied by hand each step).

    A group with an ``lr_scale`` (Muon's matrices: `buildlm.train.muon`) gets ``lr * lr_scale``:
    one schedule drives both rates.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
