"""Muon: momentum, then orthogonalised, for the hidden weight matrices; AdamW for the rest.

AdamW scales each weight's step by that weight's own gradient history. Muon (Jordan et al. 2024,
used by the modded-nanogpt speedruns and nanochat; "Muon is Scalable", Liu et al. 2025) treats a
weight *matrix* as one object: it keeps a momentum of the gradient, as SGD does, and replaces
that momentum M = U S V^T by its nearest semi-orthogonal matrix U V^T before stepping. Every
direction the matrix can move in then moves by the same amount: the few directions that
dominate the raw gradient no longer drown the rare ones, which is where the speed-up comes from.

Computing U V^T by an SVD is slow on accelerators; Muon gets it from a few Newton-Schulz steps,
matrix products only. Start from X = M / ||M||_F (every singular value in (0, 1]) and repeat

    A = X X^T,    X <- a X + (b A + c A A) X,

which maps each singular value s to a s + b s^3 + c s^5 and leaves U and V alone. The cubic
(a, b, c) = (1.5, -0.5, 0) converges to exactly 1 (the polar factor U V^T) but slowly; the
quintic (3.4445, -4.7750, 2.0315) is tuned to push small singular values up fast, and after 5
steps leaves nearly every one between about 0.5 and 1.2: not exactly U V^T, which does not hurt.

Muon is meant for the 2-D matrices inside the blocks (attention and MLP projections, and each
expert of a mixture, one matrix at a time). The embedding (a lookup, not a linear map of its
input's directions), the LM head, norms and biases keep AdamW, as modded-nanogpt and nanochat
split them. The fused q/k/v matrix is three matrices side by side: each part is orthogonalised
alone. One optimizer object holds both kinds of group, so checkpoints, gradient scaling and the
learning-rate schedule treat it like AdamW.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

NS_QUINTIC = (3.4445, -4.7750, 2.0315)
NS_CUBIC = (1.5, -0.5, 0.0)
SCALE_RULES = ("original", "match_rms_adamw")


def orthogonalize(
    m: torch.Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = NS_QUINTIC,
    eps: float = 1e-7,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Newton-Schulz: about U V^T for m = U S V^T, over the last two dims (batched over the rest).

    ``dtype``: the precision of the iteration (bf16 on GPUs; fp32 by default, since CPUs
    without bf16 instructions run bf16 matmuls far slower). The result has m's dtype.
    """
    x = m.to(dtype or m.dtype)
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the wide side: A = X X^T is then the smaller square
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # singular values now <= 1
    a, b, c = coefficients
    for _ in range(steps):
        gram = x @ x.mT  # (..., r, r), r = min(rows, cols)
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return (x.mT if tall else x).to(m.dtype)


def update_scale(rows: int, cols: int, rule: str = "original") -> float:
    """How much to scale an orthogonalised update of a (rows, cols) matrix.

    An orthogonal update's entries have RMS sqrt(1/cols) for a wide matrix and sqrt(1/rows) for
    a tall one. "original" (Jordan) multiplies by sqrt(max(1, rows/cols)) so tall and wide
    matrices move alike; "match_rms_adamw" (Liu et al.) by 0.2 sqrt(max(rows, cols)), which
    gives the update the RMS of a typical AdamW step (about 0.2), so AdamW's learning rate and
    weight decay carry over.
    """
    if rule == "original":
        return math.sqrt(max(1.0, rows / cols))
    if rule == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"unknown Muon scale rule {rule!r}; choose one of {', '.join(SCALE_RULES)}")


def hidden_matrices(model: nn.Module) -> dict[str, list[int] | None]:
    """The parameters Muon should train, by name, each with its row blocks (None: one matrix).

    Every >= 2-D parameter inside the transformer blocks except a mixture's router (a small
    scoring layer, kept on AdamW). The fused attention ``qkv`` weight is split into its q, k
    and v rows.
    """
    out: dict[str, list[int] | None] = {}
    config = getattr(model, "config", None)
    for name, p in model.named_parameters():
        if not p.requires_grad or p.dim() < 2 or not name.startswith("blocks."):
            continue
        if ".router." in name or name.endswith(".router.weight"):
            continue
        splits = None
        if name.endswith("attn.qkv.weight") and config is not None:
            q, kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
            splits = [q, kv, kv]
        out[name] = splits
    return out


class Muon(torch.optim.Optimizer):
    """Muon for groups with ``muon=True``, AdamW for the others, in one optimizer.

    A Muon group's step, per matrix W with gradient G (Nesterov momentum, as torch.optim.Muon):
    B <- mu B + G;  U = G + mu B (or B without Nesterov);  W <- W (1 - lr wd) - lr s NS(U),
    with s from `update_scale`. An AdamW group's step is AdamW's (decoupled weight decay,
    bias-corrected moments). ``lr`` per group is what the schedule writes (see
    `buildlm.train.optim.set_lr`: each group keeps its ``lr_scale``).
    """

    def __init__(
        self,
        groups: Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_dtype: torch.dtype | None = None,
        scale_rule: str = "original",
    ) -> None:
        update_scale(1, 1, scale_rule)  # validates the rule
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum=momentum,
            nesterov=nesterov, ns_steps=ns_steps, ns_dtype=ns_dtype, scale_rule=scale_rule,
            muon=False, splits=None,
        )  # fmt: skip
        super().__init__(list(groups), defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.dim() < 2 for p in group["params"]):
                raise ValueError("Muon groups take matrices (>= 2-D parameters) only")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (self._muon_step if group["muon"] else self._adamw_step)(group)
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        lr, mu = group["lr"], group["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(g))
            buf.mul_(mu).add_(g)
            u = g.add(buf, alpha=mu) if group["nesterov"] else buf
            blocks = u.split(group["splits"], dim=-2) if group["splits"] else (u,)
            update = torch.cat(
                [
                    orthogonalize(b, group["ns_steps"], dtype=group["ns_dtype"])
                    * update_scale(b.shape[-2], b.shape[-1], group["scale_rule"])
                    for b in blocks
                ],
                dim=-2,
            )
            p.mul_(1 - lr * group["weight_decay"])
            p.add_(update, alpha=-lr)

    def _adamw_step(self, group: dict[str, Any]) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t = float(state["step"])
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(p.grad, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            p.mul_(1 - lr * group["weight_decay"])
            denom = (v / (1 - beta2**t)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))


def muon_param_groups(
    model: nn.Module, lr: float, muon_lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Groups for `Muon`: hidden matrices (q/k/v split apart) on Muon at ``muon_lr``; the rest
    on AdamW as `buildlm.train.optim.param_groups` splits them (matrices decay, 1-D do not).

    ``lr_scale`` = muon_lr / lr lets one schedule drive both rates. Muon's weight decay is set so
    that a step shrinks the matrices by lr * weight_decay, as AdamW would.
    """
    hidden = hidden_matrices(model)
    named = dict(model.named_parameters())
    plain = [n for n, s in hidden.items() if s is None]
    split = [n for n, s in hidden.items() if s is not None]
    groups: list[dict[str, Any]] = []
    scale = muon_lr / lr
    for names in (plain, split):
        if names:
            groups.append(
                dict(params=[named[n] for n in names], muon=True, lr=muon_lr, lr_scale=scale,
                     weight_decay=weight_decay / scale, splits=hidden[names[0]])
            )  # fmt: skip
    rest = [p for n, p in model.named_parameters() if p.requires_grad and n not in hidden]
    decay, no_decay = [p for p in rest if p.dim() >= 2], [p for p in rest if p.dim() < 2]
    groups.append(dict(params=decay, weight_decay=weight_decay))
    groups.append(dict(params=no_decay, weight_decay=0.0))
    return groups
