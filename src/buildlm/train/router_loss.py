"""The router losses of a mixture-of-experts model, added to the training loss, and their log.

A router trained on the next-token loss alone tends to collapse: the experts it favours early
get more gradient, get better, and get favoured more, until a few experts take every token and
the rest are dead weight. Two small losses counter it (see `buildlm.model.moe.RouterStats`):

- the load-balancing loss (Switch Transformer), n_experts * sum_e share_e * mean_prob_e,
  which is 1 when the tokens spread evenly and grows as they concentrate;
- the z-loss (ST-MoE), mean logsumexp(router logits)^2, which keeps the logits small.

The trainer adds ``moe_aux_loss_coef`` and ``moe_z_loss_coef`` times them to each micro-batch's
loss (the gradient), never to the loss it reports (that stays the cross-entropy, comparable
with a dense model's), and logs them with each expert's share of the tokens, so a collapse shows
in metrics.csv as a few ``expert_share_*`` columns taking nearly all of the tokens and the rest
near 0 (balanced: each near 1 / n_experts). A dense model has no router: all this is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from buildlm.model.moe import router_stats


class RouterLoss:
    """Router losses for ``model``'s last forward, summed over one optimizer step for the log."""

    def __init__(self, model: nn.Module, aux_coef: float, z_coef: float) -> None:
        self.model, self.aux_coef, self.z_coef = model, aux_coef, z_coef
        self.sums: dict[str, torch.Tensor] = {}

    def start_step(self) -> None:
        """Forget the previous step's figures."""
        self.sums = {}

    def __call__(self, n: int) -> torch.Tensor | float:
        """The weighted router losses of the forward just run (0.0 for a dense model).

        ``n``: micro-batches in the step; each one's figures count 1/n in the step's log. The
        figures stay tensors (no device sync per micro-batch) until `row` reads them.
        """
        stats = router_stats(self.model)
        if stats is None:
            return 0.0
        for key, value in (
            ("moe_balance_loss", stats.balance_loss), ("moe_z_loss", stats.z_loss),
            ("share", stats.share),
        ):  # fmt: skip
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().float() / n
        loss = 0.0
        if self.aux_coef:
            loss = loss + self.aux_coef * stats.balance_loss
        if self.z_coef:
            loss = loss + self.z_coef * stats.z_loss
        return loss

    def reduce(self, mean: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Average this step's figures over the ranks of a distributed run with ``mean`` (an
        all-reduce), so the log shows the shares of the whole batch, not of one rank's part.
        Every rank calls it at every step (a collective), MoE or not: a dense model does nothing.
        """
        if not self.sums:
            return
        keys = list(self.sums)
        flat = mean(torch.cat([self.sums[k].reshape(-1) for k in keys]))  # one all-reduce
        sizes = [self.sums[k].numel() for k in keys]
        for key, part in zip(keys, flat.split(sizes), strict=True):
            self.sums[key] = part.reshape(self.sums[key].shape)

    def row(self) -> dict[str, float]:
        """This step's figures as metrics.csv columns (``{}`` for a dense model)."""
        if not self.sums:
            return {}
        out = {k: float(v) for k, v in self.sums.items() if k != "share"}
        out.update({f"expert_share_{e}": v for e, v in enumerate(self.sums["share"].tolist())})
        return out

    def describe(self) -> str:
        """One progress line: each expert's share of the tokens (mean over the MoE layers)."""
        shares = " ".join(f"{v:.2f}" for v in self.sums["share"].tolist())
        return f"expert token shares {shares} (balance loss {float(self.sums['moe_balance_loss']):.3f})"
