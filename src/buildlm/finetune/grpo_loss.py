"""The arithmetic of GRPO: group-relative advantages, the clipped objective, the k3 KL estimate.

GRPO (Group Relative Policy Optimization, Shao et al., 2024, DeepSeekMath) is PPO without a
value network. For each prompt the policy samples a *group* of G completions; a verifier scores
each one (reward r_i); the group itself is the baseline:

    A_i = r_i - mean(r)                      ("mean": Dr. GRPO, Liu et al., 2025)
    A_i = (r_i - mean(r)) / (std(r) + eps)   ("mean_std": the original GRPO)

so a completion is pushed up when it did better than its siblings and down when worse. A group
whose rewards are all equal (all right, or all wrong) says nothing about which way to go: its
advantages are exactly 0, and it contributes no gradient (nor a NaN from a zero std).

Every token of completion i gets the advantage A_i. With the probability ratio of each sampled
token between the policy being trained and the policy that sampled it (``old``),

    ratio_t = pi(y_t | x, y_<t) / pi_old(y_t | x, y_<t) = exp(logp_t - old_logp_t)

the PPO clipped objective, per token, is

    objective_t = min(ratio_t * A, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A)

The ``min`` with the clipped ratio removes the incentive to move a token's probability further
than the clip range in the direction the advantage favours: once a token with A > 0 has
ratio > 1 + eps_high (or one with A < 0 has ratio < 1 - eps_low), its gradient is 0. The *clip
fraction* counts those tokens. DAPO (Yu et al., 2025) clips higher than lower (eps_high >
eps_low) so unlikely tokens can still gain probability, and averages over **tokens**, not
sequences:

    loss = - sum over every completion token in the batch of objective_t  /  number of those tokens

(the original GRPO first averages within each completion, which weighs the tokens of short
completions more than those of long ones).

On the first optimisation pass over freshly sampled completions the policy *is* the old
policy: every ratio is exactly 1, nothing is clipped, and the gradient is the plain policy
gradient, -sum A_i grad logp_t / N.

An optional penalty keeps the policy near a frozen reference (the starting model), with the
"k3" estimate of KL(pi || pi_ref) at each sampled token (Schulman, 2020):

    k3_t = exp(ref_logp_t - logp_t) - (ref_logp_t - logp_t) - 1  >= 0

unbiased (its expectation under pi is the KL), never negative (e^u >= 1 + u), 0 where the two
agree. ``loss += beta * mean k3``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ADVANTAGES = ("mean_std", "mean")


def group_advantages(
    rewards: torch.Tensor, mode: str = "mean_std", eps: float = 1e-4
) -> torch.Tensor:
    """Advantages of rewards (P, G): each completion's reward against its group's (see above).

    ``mode`` "mean_std" divides by the group's standard deviation (unbiased, over G) plus
    ``eps``; "mean" only subtracts the mean. Groups whose rewards are all equal get exactly 0.
    Returns (P, G), in the rewards' dtype.
    """
    if mode not in ADVANTAGES:
        raise ValueError(f"unknown advantage mode {mode!r}; choose one of {', '.join(ADVANTAGES)}")
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(
            f"rewards must be (prompts, group_size >= 2), got shape {tuple(rewards.shape)}"
        )
    centred = rewards - rewards.mean(dim=1, keepdim=True)  # (P, G)
    if mode == "mean_std":
        centred = centred / (rewards.std(dim=1, keepdim=True) + eps)
    same = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)  # (P, 1): nothing to learn
    return torch.where(same, torch.zeros_like(centred), centred)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The k3 estimate of KL(pi || pi_ref) at each sampled token (same shape as the inputs)."""
    diff = ref_logp - logp
    return torch.exp(diff) - diff - 1.0


@dataclass
class PolicyLoss:
    """The loss (scalar, with gradient) and figures over the masked tokens (detached scalars).

    ``clip_fraction``: share of tokens whose clipped term is active (zero gradient).
    ``kl``: mean k3 per token (0 without a reference). ``ratio``: mean probability ratio.
    ``tokens``: how many completion tokens these figures cover.
    """

    loss: torch.Tensor
    clip_fraction: torch.Tensor
    kl: torch.Tensor
    ratio: torch.Tensor
    tokens: int


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    num_tokens: float | None = None,
) -> PolicyLoss:
    """The token-level clipped objective (negated: a loss), with the optional k3 penalty.

    logp, old_logp, ref_logp, mask: (B, T), the log-probabilities of the sampled tokens under
    the policy (with gradient), the sampling policy and the reference; mask is True on
    completion tokens. advantages: (B,), one per completion. ``num_tokens`` divides the sum
    (default: ``mask.sum()``; pass the whole batch's count when it is split into pieces, so
    the pieces' losses add up to the batch's).
    """
    mask = mask.to(logp.dtype)  # (B, T)
    adv = advantages.to(logp.dtype).unsqueeze(1)  # (B, 1), the same for every token of a row
    ratio = torch.exp(logp - old_logp)  # (B, T)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped)  # (B, T)
    kl = torch.zeros_like(per_token)
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp)
        if beta:
            per_token = per_token + beta * kl
    count = mask.sum()
    denominator = (
        count if num_tokens is None else torch.as_tensor(float(num_tokens), dtype=logp.dtype)
    )
    loss = (per_token * mask).sum() / denominator.clamp(min=1.0)
    with torch.no_grad():
        active = ((ratio < 1.0 - eps_low) & (adv < 0)) | ((ratio > 1.0 + eps_high) & (adv > 0))
        n = count.clamp(min=1.0)
        return PolicyLoss(
            loss,
            (active.to(mask.dtype) * mask).sum() / n,
            (kl.detach() * mask).sum() / n,
            (ratio.detach() * mask).sum() / n,
            int(count.item()),
        )
