"""Mixture of experts: an MLP sub-layer where each token uses only a few of many MLPs.

A dense MLP spends every one of its weights on every token. A mixture-of-experts (MoE) layer
holds ``n_experts`` MLPs ("experts") and a small **router**, a Linear(d_model, n_experts) that
scores the experts for each token; the token goes to its ``k = n_active_experts`` best experts
and the layer returns their outputs weighted by the scores:

    scores = softmax(router(x))           (or sigmoid, each expert scored on its own)
    top_w, top_ids = topk(scores, k)      (optionally top_w /= top_w.sum(): renormalised)
    y = sum_j top_w[j] * expert[top_ids[j]](x)   (+ shared(x), an always-on MLP, if any)

So the model holds n_experts MLPs' worth of parameters ("total") but each token costs only k
of them ("active"): more capacity for the same FLOPs per token. Mixtral routes to 2 of 8 and
renormalises; Qwen3-MoE routes to 8 of 128; Qwen2-MoE adds a shared expert whose output is
scaled by a sigmoid gate. The families differ only in these switches (see `ModelConfig`).

The experts' weights are stored as three stacked tensors, (n_experts, out, in) each, one
nn.Linear-layout matrix per expert, so expert e is ``w_gate[e]``, ``w_up[e]``, ``w_down[e]``
(``w_fc``/``w_proj`` for GELU experts).

Two implementations of "send each token to its experts", tested equal:

- `Experts.forward_reference`: loop over the experts; each one gathers the tokens that chose
  it (a boolean mask), runs its MLP on them and adds the weighted result back. Easy to read.
- `Experts.forward`: sort the (token, expert) assignments by expert id once, so each expert's
  tokens sit in one contiguous slice; ``split`` them, run each expert on its slice (experts
  that got no token are skipped, so their weights are never read), and add everything back in
  one ``index_add_``. No masks over all tokens per expert, never a loop over tokens.

Training a router needs help to keep it from sending everything to a few experts. Each forward
records `RouterStats` (the load-balancing loss, the z-loss, each expert's token share), which
`router_stats` averages over the model's MoE layers for the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from buildlm.model.config import ModelConfig
from buildlm.model.mlp import make_mlp


@dataclass
class RouterStats:
    """What one forward's routing looked like (averaged over layers by `router_stats`).

    ``balance_loss``: Switch Transformer's load-balancing loss, n_experts * sum_e f_e * P_e,
    with f_e the share of the (token, expert) assignments that went to expert e and P_e the
    mean routing probability of e. It is 1 when routing is uniform and grows as routing
    concentrates; its gradient flows through P_e (f_e comes from a non-differentiable top-k).
    ``z_loss``: mean over tokens of logsumexp(router logits)^2 (ST-MoE): keeps the logits small,
    so the router's softmax does not saturate. ``share``: f_e, (n_experts,), sums to 1, no grad.
    """

    balance_loss: torch.Tensor
    z_loss: torch.Tensor
    share: torch.Tensor


class Experts(nn.Module):
    """``n_experts`` SwiGLU (or GELU) MLPs without biases, weights stacked per expert."""

    def __init__(self, n_experts: int, d_model: int, d_ff: int, kind: str = "swiglu") -> None:
        super().__init__()
        self.kind, self.n_experts = kind, n_experts
        if kind == "swiglu":
            self.w_gate = nn.Parameter(torch.empty(n_experts, d_ff, d_model))
            self.w_up = nn.Parameter(torch.empty(n_experts, d_ff, d_model))
            self.w_down = nn.Parameter(torch.empty(n_experts, d_model, d_ff))
        else:
            self.w_fc = nn.Parameter(torch.empty(n_experts, d_ff, d_model))
            self.w_proj = nn.Parameter(torch.empty(n_experts, d_model, d_ff))

    def reset_parameters(self, std: float, residual_std: float) -> None:
        """Each expert as a dense MLP is initialised: N(0, std^2), its output matrix residual_std."""
        for name, p in self.named_parameters():
            nn.init.normal_(p, mean=0.0, std=residual_std if name in ("w_down", "w_proj") else std)

    def params_per_expert(self) -> int:
        """Weights of one expert (what each extra active expert adds to a token's matmuls)."""
        return sum(p[0].numel() for p in self.parameters())

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert ``e``'s MLP on tokens x (n, d_model) -> (n, d_model)."""
        if self.kind == "swiglu":
            h = F.silu(F.linear(x, self.w_gate[e])) * F.linear(x, self.w_up[e])  # (n, d_ff)
            return F.linear(h, self.w_down[e])
        return F.linear(F.gelu(F.linear(x, self.w_fc[e]), approximate="tanh"), self.w_proj[e])

    def forward_reference(
        self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        """x (N, d), weights and ids (N, k) -> (N, d): one boolean mask per expert."""
        out = torch.zeros_like(x)
        for e in range(self.n_experts):
            token, slot = (ids == e).nonzero(as_tuple=True)  # who chose e, in which top-k slot
            if token.numel() == 0:
                continue
            y = self.expert(e, x[token]) * weights[token, slot, None]
            out.index_add_(0, token, y)
        return out

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """x (N, d), weights and ids (N, k) -> (N, d): tokens grouped by expert with one sort."""
        if x.is_meta:  # shapes only (a model built on the meta device): no data to route
            return torch.empty_like(x)
        k = ids.shape[1]
        flat_ids = ids.reshape(-1)  # (N*k,) assignment a = token a // k, slot a % k
        order = flat_ids.argsort(stable=True)  # assignments grouped by expert
        token = order // k  # (N*k,) the token of each sorted assignment
        counts = torch.bincount(flat_ids, minlength=self.n_experts).tolist()
        groups = x[token].split(counts)  # expert e's tokens: one contiguous slice
        y = torch.cat([self.expert(e, g) for e, g in enumerate(groups) if len(g)])  # (N*k, d)
        y = y * weights.reshape(-1)[order, None]
        return torch.zeros_like(x).index_add_(0, token, y)


class MoE(nn.Module):
    """Router + experts (+ an optional shared MLP): a drop-in replacement for the dense MLP."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.k = config.n_active_experts
        self.score, self.renormalize = config.router_score, config.router_renormalize
        self.router = nn.Linear(config.d_model, config.n_experts, bias=False)
        self.experts = Experts(config.n_experts, config.d_model, config.moe_d_ff, config.mlp)
        self.shared = None
        self.shared_gate = None
        if config.n_shared_experts:
            self.shared = make_mlp(
                config.mlp, config.d_model, config.shared_expert_d_ff, False, 0.0
            )
            if config.shared_expert_gate:
                self.shared_gate = nn.Linear(config.d_model, 1, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.use_reference = False  # True: run Experts.forward_reference (for tests/teaching)
        self.last_stats: RouterStats | None = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (N, d) -> top-k weights (N, k) in x's dtype, expert ids (N, k), logits (N, E).

        Scores are computed in fp32 (a bf16 softmax over many experts picks noisy top-k). Ties
        are broken by torch.topk, once, so both expert paths (and transformers, which calls
        topk too) see the same choice.
        """
        logits = self.router(x)  # (N, E)
        scores = logits.float().softmax(-1) if self.score == "softmax" else logits.float().sigmoid()
        top_w, top_ids = scores.topk(self.k, dim=-1)  # (N, k)
        if self.renormalize:
            top_w = top_w / top_w.sum(-1, keepdim=True)
        self.last_stats = None if x.is_meta else self._stats(logits, scores, top_ids)
        return top_w.to(x.dtype), top_ids, logits

    def _stats(self, logits: torch.Tensor, scores: torch.Tensor, ids: torch.Tensor) -> RouterStats:
        n_experts = logits.shape[-1]
        counts = torch.bincount(ids.reshape(-1), minlength=n_experts)
        share = (counts.float() / ids.numel()).detach()  # f_e: sums to 1
        probs = scores / scores.sum(-1, keepdim=True)  # sigmoid scores made a distribution
        balance = n_experts * (share * probs.mean(0)).sum()
        z = torch.logsumexp(logits.float(), dim=-1).pow(2).mean()
        return RouterStats(balance, z, share)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_model) -> (B, T, d_model)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, d): routing is per token, time plays no part
        weights, ids, _ = self.route(x)
        run = self.experts.forward_reference if self.use_reference else self.experts
        y = run(x, weights, ids)
        if self.shared is not None:
            s = self.shared(x)
            if self.shared_gate is not None:
                s = torch.sigmoid(self.shared_gate(x)) * s
            y = y + s
        return self.dropout(y.reshape(shape))


def router_stats(model: nn.Module) -> RouterStats | None:
    """The last forward's `RouterStats` averaged over ``model``'s MoE layers (None: no MoE).

    Losses are averaged over layers (so a coefficient means the same at any depth) and so are
    the shares (each layer's sum to 1, so their mean does too).
    """
    stats = [m.last_stats for m in model.modules() if isinstance(m, MoE) and m.last_stats is not None]
    if not stats:
        return None
    n = len(stats)
    return RouterStats(
        sum(s.balance_loss for s in stats) / n,
        sum(s.z_loss for s in stats) / n,
        sum(s.share for s in stats) / n,
    )


def inactive_expert_params(model: nn.Module) -> int:
    """Expert weights a token does not use: (n_experts - k) experts' worth per MoE layer.

    Total minus this is the "active" count: the weights one token's forward actually reads.
    """
    return sum(
        (m.experts.n_experts - m.k) * m.experts.params_per_expert()
        for m in model.modules()
        if isinstance(m, MoE)
    )
