"""What a ``fit`` shows and records while it trains: the progress bar, metrics.csv, the loss plot.

The bar counts optimizer steps up to ``max_steps`` or, when the run has a time budget, the
seconds of the budget used. Every ``log_interval`` steps (and after the last one) a row goes to
the run folder's metrics.csv (and TensorBoard): the training loss, the learning rate, tokens per
second over the steps since the previous row, and MFU (model FLOPs utilisation,
`metrics.PeakFlops`); the same figures stand beside the bar. Evaluations add their own rows.
When the fit ends, the losses are drawn to loss.png.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from buildlm.train.budget import TimeBudget
from buildlm.train.config import TrainConfig
from buildlm.train.distributed import silent
from buildlm.train.metrics import MetricsLogger, PeakFlops, plot_losses

# Columns of a step's extra figures shown beside the bar too (reinforcement learning's reward
# and accuracy); every extra column goes to metrics.csv.
BAR_FIGURES = ("reward", "accuracy")


class Progress:
    """The bar and the metrics of one ``fit`` that starts at step ``step``.

    ``clock`` is the run's time budget (None: the bar counts steps). MFU divides
    ``flops_per_token`` times the tokens per second of each of ``devices`` by ``peak``. Rows go
    to ``run_dir`` (None: nowhere); ``log`` says how the time budget stands at the start. Only
    the main process (``is_main``) shows and writes anything.
    """

    def __init__(
        self,
        config: TrainConfig,
        step: int,
        clock: TimeBudget | None,
        peak: PeakFlops,
        flops_per_token: float,
        run_dir: Path | None = None,
        log: Callable[[str], None] = print,
        devices: int = 1,
        is_main: bool = True,
    ) -> None:
        from tqdm import tqdm  # imported when a fit starts, not with the package

        self.config, self.clock, self.peak = config, clock, peak
        self.flops_per_token, self.devices = flops_per_token, devices
        self.run_dir = run_dir
        self.metrics: MetricsLogger | None = None
        if run_dir is not None and is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.metrics = MetricsLogger(run_dir, tensorboard=config.tensorboard, resume=step > 0)
            self.metrics.drop_after(step)  # a resumed run redoes the rows after its checkpoint
        hidden = not (config.progress and is_main)
        if clock is not None:
            self.bar = tqdm(
                total=round(clock.seconds), initial=min(round(clock.used()), round(clock.seconds)), disable=hidden,
                desc="train", unit="s of budget",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total}s of the time budget{postfix}",
            )  # fmt: skip
            if clock.used() < clock.training_end:
                log(
                    f"time budget: {clock.seconds:g}s from the start of the run, {clock.used():.0f}s used; "
                    "training stops in time for the final evaluation, checkpoint and sample"
                )
            else:
                log(
                    f"time budget: {clock.used():.0f}s of the {clock.seconds:g}s went to starting up and "
                    "preparing the data: training one step only (raise --train.time_budget_s)"
                )
        else:
            self.bar = tqdm(total=config.max_steps, initial=step, disable=hidden, desc="train", unit="step")
        self.write: Callable[[str], None] = self.bar.write if is_main else silent  # a line above the bar
        self.window_start, self.window_tokens = time.perf_counter(), 0

    def step_done(
        self, step: int, loss: float, lr: float, tokens: int, tokens_seen: int, last: bool,
        extra: Callable[[], dict[str, float]] | None = None,
    ) -> None:  # fmt: skip
        """After step ``step``, which read ``tokens`` (``tokens_seen`` in all): move the bar, and
        every ``log_interval`` steps (or after the ``last``) record the figures, with the
        columns ``extra()`` gives (a mixture of experts' router figures, a task's own), asked only
        then; those named in `BAR_FIGURES` are shown beside the bar as well."""
        self.window_tokens += tokens
        if self.clock is None:
            self.bar.update(1)
        else:
            self.bar.update(max(0, min(round(self.clock.used()), self.bar.total) - self.bar.n))
        if step % self.config.log_interval != 0 and not last:
            return
        now = time.perf_counter()
        tok_s = self.window_tokens / max(now - self.window_start, 1e-9)
        self.window_start, self.window_tokens = now, 0
        was_raised = self.peak.raised
        util = self.peak.mfu(self.flops_per_token * tok_s / self.devices)
        if self.peak.raised and not was_raised:
            self.write(
                f"training ran faster than the measured peak: {self.peak.describe()[:-1]}, "
                "raised: the start-up measurement ran on a busy machine)"
            )
        row = extra() if extra is not None else {}
        shown = {k: f"{row[k]:.3f}" for k in BAR_FIGURES if k in row}
        self.bar.set_postfix(  # a dict keeps this order (keywords would be sorted)
            {"step": step, "loss": f"{loss:.3f}", **shown, "lr": f"{lr:.2e}", "tok_s": f"{tok_s:,.0f}", "mfu": f"{util:.1%}"}
        )  # fmt: skip
        self.record(
            {"step": step, "train_loss": loss, "lr": lr, "tokens_per_s": tok_s, "mfu": util, "tokens": tokens_seen} | row
        )

    def record(self, row: dict[str, Any]) -> None:
        """Append one row (``{"step": 10, "val_loss": 4.2}``) to the run's metrics."""
        if self.metrics is not None:
            self.metrics.log(row)

    def close(self, baselines: dict[str, float] | None = None) -> None:
        """Close the bar; draw the losses (with the ``baselines``' levels) to loss.png."""
        self.bar.close()
        if self.metrics is not None:
            if self.metrics.rows:
                plot_losses(self.metrics, self.run_dir / "loss.png", baselines)
            self.metrics.close()


def describe_eval(ev: dict[str, float], task: Any = None) -> str:
    """One line for an evaluation's figures (a fine-tuning task words its own)."""
    if task is not None:
        return task.describe(ev)
    bpb = f", {ev['val_bpb']:.3f} bits/byte" if "val_bpb" in ev else ""
    return f"val loss {ev['val_loss']:.4f} (ppl {ev['val_ppl']:.1f}{bpb})"
