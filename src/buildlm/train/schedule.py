"""The schedule of a training run: each step's learning rate, the jobs that follow each step,
and, under a time budget, which step is the last.

The `Trainer` asks its :class:`Schedule`

- before a step: its learning rate (warm-up, then the :class:`~buildlm.train.budget.DecayPlan`'s
  cosine, counted in steps or in the budget's seconds) and, under a budget, whether it is the
  last step there is time for;
- after a step: which periodic jobs follow it (evaluation, sample, checkpoint) and, under a
  budget, whether the time left still holds another step once they have run.

The clock itself, its reserve for the end-of-run jobs and the plan are in `budget.py`; this file
is what drives them during ``fit``. What a resumed run needs of it -- the plan, the seconds of the
budget earlier sessions used, whether the run finished -- is :meth:`Schedule.state_dict`, saved
in ``trainer_state.pt``. The `TrainConfig` is only read: the settings a user passed stay exactly
as passed, and resuming continues the plan the checkpoint holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from buildlm.train.budget import DecayPlan, TimeBudget, decay_lr
from buildlm.train.config import TrainConfig

T = TypeVar("T")


@torch.no_grad()
def forward_seconds(model: nn.Module, length: int, device: torch.device) -> float:
    """Seconds of one forward pass over one window of ``length`` tokens (after a warm-up)."""
    x = torch.zeros((1, min(length, model.config.context_length)), dtype=torch.long, device=device)
    model.eval()
    model(x)[0, -1, 0].item()
    t0 = time.perf_counter()
    model(x)[0, -1, 0].item()  # .item() waits for the device
    seconds = time.perf_counter() - t0
    model.train()
    return seconds


class Schedule:
    """The learning rate and the stopping rule of one run, as ``config`` sets them.

    ``evaluates``: the run has validation batches; ``writes``: it saves checkpoints (it has a run
    folder); ``samples``: it can generate text (a tokenizer and no fine-tuning task). ``started``
    (a ``time.perf_counter()`` value) is when the run began, if before ``fit``: a time budget
    counts from there.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        evaluates: bool,
        writes: bool,
        samples: bool,
        started: float | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.evaluates, self.writes, self.samples = evaluates, writes, samples
        self.started = started
        self.log = log
        # The state trainer_state.pt keeps (state_dict):
        self.plan = DecayPlan(config.max_steps, config.time_budget_s, from_step=config.warmup_steps)
        self.spent = 0.0  # seconds of time_budget_s used by earlier sessions
        self.finished = False  # the run reached the end of its plan (max_steps or the deadline)
        # While a budgeted fit runs:
        self.clock: TimeBudget | None = None
        self.weight_bytes = 0  # what a checkpoint writes, twice more for the AdamW moments

    # --- the learning rate ----------------------------------------------------------------------

    def sync(self, step: int, lr: float) -> None:
        """Make the learning-rate plan end where the settings now say the run ends.

        A new run starts the cosine at the peak when warm-up ends. A resumed run keeps its plan,
        unless it was given a new end (``max_steps`` or ``time_budget_s`` changed, typically
        raised to train a finished run further): then a new cosine starts at the current
        ``step`` from the rate ``lr`` the run had, down to ``min_lr`` at the new end. The rate
        never jumps up.
        """
        cfg = self.config
        if self.plan.same_end(cfg.max_steps, cfg.time_budget_s):
            self.plan.max_steps = cfg.max_steps  # a budgeted run's upper bound may change freely
            return
        if self.plan.from_lr is None and step <= cfg.warmup_steps:
            self.plan = DecayPlan(cfg.max_steps, cfg.time_budget_s, from_step=cfg.warmup_steps)
            return
        self.plan = DecayPlan(cfg.max_steps, cfg.time_budget_s, from_step=step, from_lr=lr)
        self.finished = False
        end = f"step {cfg.max_steps}" if cfg.time_budget_s is None else f"the end of the {cfg.time_budget_s:g}s budget"
        self.log(f"learning rate: from {lr:.6g} at step {step} down to {cfg.min_lr:g} at {end}")

    def lr_for_step(self, step: int, final: bool = False) -> float:
        """The learning rate of the step that follows ``step`` steps: warm-up, then the plan's cosine.

        Counted in steps, or, while a budgeted ``fit`` runs, in the share of its training time
        spent (``final``: this is the budget's last step, so the floor).
        """
        cfg, plan = self.config, self.plan
        if plan.from_lr is None and step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        top = cfg.lr if plan.from_lr is None else plan.from_lr
        if self.clock is None or plan.time_budget_s is None:
            progress = (step - plan.from_step) / max(1, plan.max_steps - plan.from_step)
            return self.decay(progress, top)
        if final:
            plan.progress = 1.0
            return cfg.min_lr
        if plan.from_time is None:  # warm-up just ended: the cosine starts now
            plan.from_step, plan.from_time = step, self.clock.used()
        plan.progress = max(plan.progress, self.clock.progress(plan.from_time))  # never back
        return self.decay(plan.progress, top)

    def decay(self, progress: float, top: float) -> float:
        """The rate at ``progress`` of the plan, from ``top`` to min_lr (cosine or wsd)."""
        cfg = self.config
        return decay_lr(progress, top, cfg.min_lr, cfg.lr_schedule, cfg.lr_decay_fraction)

    # --- the jobs between steps -----------------------------------------------------------------

    def jobs_after(self, step: int) -> list[str]:
        """The periodic jobs due after step ``step``: ``"eval"``, ``"sample"``, ``"save"``."""
        cfg = self.config
        jobs = []
        if self.evaluates and step % cfg.eval_interval == 0:
            jobs.append("eval")
        if cfg.sample_interval and step % cfg.sample_interval == 0:
            jobs.append("sample")
        if self.writes and cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0:
            jobs.append("save")
        return jobs

    def timed(self, job: str, work: Callable[[], T]) -> T:
        """Run ``work``; under a budget, note how long it took as the cost of ``job``."""
        t0 = time.perf_counter()
        out = work()
        if self.clock is not None:
            self.clock.note(job, time.perf_counter() - t0)
        return out

    # --- the time budget during fit -------------------------------------------------------------

    def start(self, model: nn.Module, device: torch.device) -> TimeBudget | None:
        """Start a fit's clock (None without a budget), with a first guess of the sample's time."""
        cfg = self.config
        if cfg.time_budget_s is None:
            return None
        clock = TimeBudget(cfg.time_budget_s, started=self.started, spent=self.spent)
        self.started = None  # a second fit counts from its own start
        self.clock = clock
        self.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        if self.writes:
            import buildlm.viz.losses  # noqa: F401  (plotting's first import, ~1 s, is not left to the end)
        if self.samples:
            # A sample runs the model once per token on the text so far: at most this long.
            import buildlm.infer  # noqa: F401  (its first import, before the deadline's end)

            clock.estimates["sample"] = cfg.sample_tokens * forward_seconds(model, cfg.sample_tokens + 16, device)
        return clock

    def before_step(self, step: int) -> tuple[bool, float | None]:
        """Under a budget: whether the step after ``step`` is the last there is time for, and its
        learning rate. Without one: ``(False, None)`` (the rate then follows the step count)."""
        clock = self.clock
        if clock is None:
            return False, None
        if clock.first_step is not None:  # a step of this fit has run: its time prices the rest
            self._guess_end_jobs()
        # Will there be time for another step after this one (and what follows it)?
        final = not clock.room_for(clock.step_time + self._cost_after(step + 1))
        return final, self.lr_for_step(step, final)

    def after_step(self, step: int, seconds: float, final: bool) -> bool:
        """Note that step ``step`` took ``seconds``; True when the budget makes it the last one
        (``final``, or no room left for another step after the jobs due now)."""
        if self.clock is None:
            return False
        self.clock.note_step(seconds)
        return final or not self.clock.room_for(self._cost_after(step))

    def stop(self) -> None:
        """End a fit's clock, keeping the seconds it used for the next session."""
        if self.clock is not None:
            self.spent = self.clock.used()
        self.clock = None

    def _guess_end_jobs(self) -> None:
        """Times of the final evaluation, checkpoint and plot, until each has run once.

        From the step time, an evaluation batch is a forward pass (about a third of a
        micro-batch's step); a checkpoint writes the weights and two AdamW moments of each.
        """
        cfg, clock = self.config, self.clock
        micro = clock.step_time / cfg.grad_accum_steps
        clock.estimates.update(
            eval=cfg.eval_batches * micro / 3 if self.evaluates else 0.0,
            save=0.2 + 3 * self.weight_bytes / 100e6 if self.writes else 0.0,
            finish=0.5 if self.writes else 0.0,  # the loss plot
        )

    def _cost_after(self, step: int) -> float:
        """Seconds of the periodic jobs that follow step ``step`` (before the next)."""
        return sum(self.clock.cost(job) for job in self.jobs_after(step))

    # --- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The plan, the budget's seconds used so far (this session's too) and whether the run finished."""
        spent = self.clock.used() if self.clock is not None else self.spent
        return {"plan": self.plan.to_dict(), "budget_spent": spent, "finished": self.finished}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plan = DecayPlan(**state["plan"])
        self.spent = float(state.get("budget_spent", 0.0))
        self.finished = bool(state.get("finished", False))
