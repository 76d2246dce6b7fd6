"""The time budget as a deadline, and the learning-rate plan that follows it.

``--train.time_budget_s 300`` means: the whole run (preparing the data, training, the final
evaluation, checkpoint and sample) ends 300 seconds after it started. Counting steps cannot
promise that on a machine whose speed changes while it trains (other processes take the CPU,
a laptop cools down), so a budgeted run plans by the clock:

- the deadline is fixed when the run starts; a resumed run gets what its checkpoint had left;
- training stops when one more step would run into the *reserve*: the time the final evaluation,
  checkpoint and sample will need, first estimated from the step time, then raised to what each
  of them really took whenever one ran;
- after warm-up the learning rate follows a cosine of the *share of the training time spent*,
  and the last step is forced to ``min_lr``: the rate reaches its floor at the deadline however
  the speed changed on the way, and never rises.

What this cannot control: the time before the run starts (Python and PyTorch importing, a few
seconds), and a step or final evaluation that suddenly runs much slower than any before it.

The cosine itself is a :class:`DecayPlan`, kept in ``trainer_state.pt``. A new run's plan starts
at the peak ``lr`` when warm-up ends and reaches ``min_lr`` at ``max_steps`` (or the deadline).
When a resumed run is given a new end (a larger ``max_steps`` or ``time_budget_s``, to train a
finished run further), a new plan starts where the run is, at the rate it had, and decays from
there to ``min_lr`` at the new end. A finished run is at ``min_lr`` already, so it goes on at
``min_lr``: the rate never jumps back up.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any


def process_started(max_age: float = 120.0) -> float:
    """When this process started, as a ``time.perf_counter()`` value: what `buildlm train` counts
    its time budget from, so Python's and PyTorch's start-up are inside the budget.

    Read from ``/proc`` (Linux). Elsewhere, or in a process older than ``max_age`` seconds (a
    notebook or test session calling the command's ``main``, not a command starting up), now.
    """
    now = time.perf_counter()
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after "pid (name)": field 3 onwards
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, in ticks
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - age if 0.0 <= age <= max_age else now


def cosine_decay(progress: float, top: float, floor: float) -> float:
    """``top`` at progress 0, ``floor`` at progress 1 (and after), half a cosine in between."""
    progress = min(max(progress, 0.0), 1.0)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (top - floor)


def wsd_decay(progress: float, top: float, floor: float, decay_fraction: float) -> float:
    """Warmup-stable-decay after warm-up: ``top`` until the last ``decay_fraction`` of the plan,
    then a straight line down to ``floor`` at progress 1.

    Most of the run then trains at the peak rate (fast progress), and the final anneal, where
    the loss drops most, happens at the end whatever the total length: a budgeted run measures
    progress in time, so the decay starts when that share of the training time is *left* and
    still ends at the deadline if the steps slow down on the way (Hu et al. 2024, MiniCPM;
    Hägele et al. 2024).
    """
    progress = min(max(progress, 0.0), 1.0)
    start = 1.0 - decay_fraction
    if progress <= start:
        return top
    return top + (floor - top) * (progress - start) / decay_fraction


def decay_lr(progress: float, top: float, floor: float, shape: str, decay_fraction: float) -> float:
    """The rate after warm-up at ``progress`` (0 -> 1) of the plan: ``shape`` cosine or wsd."""
    if shape == "wsd":
        return wsd_decay(progress, top, floor, decay_fraction)
    return cosine_decay(progress, top, floor)


@dataclass
class DecayPlan:
    """The cosine the learning rate follows after warm-up.

    It runs from ``from_lr`` at step ``from_step`` (budget second ``from_time``) down to the
    floor at step ``max_steps`` (a step-count run, ``time_budget_s`` None) or at the end of the
    ``time_budget_s`` budget. ``from_time`` is None until a budgeted run's warm-up ends.
    ``from_lr`` None means the configured peak ``lr``. ``progress`` is how far along the cosine a
    budgeted run is: it only ever grows (when the steps get faster, the end seems to move away
    for a moment; the rate then waits rather than rising).
    """

    max_steps: int
    time_budget_s: float | None
    from_step: int
    from_time: float | None = None
    from_lr: float | None = None
    progress: float = 0.0

    def same_end(self, max_steps: int, time_budget_s: float | None) -> bool:
        """Does this plan end where the settings now say the run ends?"""
        if time_budget_s is not None or self.time_budget_s is not None:
            return self.time_budget_s == time_budget_s
        return self.max_steps == max_steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TimeBudget:
    """A run's deadline: ``seconds`` after ``started`` (a ``time.perf_counter()`` value), less what
    earlier sessions of the same run ``spent``.

    Besides the clock it keeps the longest time each end-of-run job took (``"eval"``, ``"save"``,
    ``"sample"``, ``"finish"``): the reserve kept free for them at the end.
    """

    SAFETY = 1.25  # the reserve covers its jobs running this much slower than measured
    STEP_WINDOW = 3  # the step time is the longest of the last few steps

    def __init__(self, seconds: float, started: float | None = None, spent: float = 0.0) -> None:
        self.seconds = float(seconds)
        self.started = time.perf_counter() if started is None else started
        self.spent_before = float(spent)
        self.costs: dict[str, float] = {}
        self.estimates: dict[str, float] = {}
        self.step_times: list[float] = []
        self.first_step: float | None = None

    def used(self, now: float | None = None) -> float:
        """Seconds of the budget used so far, by this session and the earlier ones."""
        now = time.perf_counter() if now is None else now
        return self.spent_before + now - self.started

    def note(self, job: str, seconds: float) -> None:
        """Record how long one run of ``job`` took (the reserve keeps the longest)."""
        self.costs[job] = max(self.costs.get(job, 0.0), seconds)

    def note_step(self, seconds: float) -> None:
        """Record a step's time. A session's first step pays one-off costs (memory, kernels):
        it counts only until the second step gives a real measurement."""
        if self.first_step is None:
            self.first_step = seconds
            return
        self.step_times = [*self.step_times[-(self.STEP_WINDOW - 1) :], seconds]

    @property
    def step_time(self) -> float:
        """Seconds one training step takes now: the longest of the last few (0 before any)."""
        return max(self.step_times, default=self.first_step or 0.0)

    def cost(self, job: str) -> float:
        """The measured cost of ``job``, or its estimate until it has run once."""
        return self.costs.get(job, self.estimates.get(job, 0.0))

    @property
    def reserve(self) -> float:
        """Seconds kept free at the end for the final evaluation, checkpoint, sample and plot."""
        return self.SAFETY * sum(self.cost(job) for job in ("eval", "save", "sample", "finish"))

    @property
    def training_end(self) -> float:
        """The budget second at which training must stop, leaving the reserve."""
        return self.seconds - self.reserve

    def room_for(self, seconds: float, now: float | None = None) -> bool:
        """Is there time for ``seconds`` more work and then one more step before training ends?"""
        return self.used(now) + seconds + self.step_time <= self.training_end

    def progress(self, from_time: float, now: float | None = None) -> float:
        """Share of the decay's time spent, from budget second ``from_time`` to the last step's start."""
        end = self.training_end - self.step_time
        if end <= from_time:
            return 1.0
        return min(max((self.used(now) - from_time) / (end - from_time), 0.0), 1.0)


def finished_message(run: str, state: dict[str, Any], max_steps: int, time_budget_s: float | None) -> str | None:
    """If the checkpoint ``state`` has nothing left to train under the settings now given, say so
    with the command that trains further; None when there is work to do.

    A budgeted run is done when its checkpoint says it ran to its deadline and the budget was
    not raised, or when it reached ``max_steps``; a step-count run when it reached ``max_steps``.
    """
    step = int(state.get("step", 0))
    if step >= max_steps:
        more = max(2 * step, step + 100)
        flag = f"--train.max_steps {more}"
        if time_budget_s is not None:
            flag += f" --train.time_budget_s {time_budget_s:g}"
        return (
            f"{run} is finished: it is at step {step} and max_steps is {max_steps}; train it further "
            f"with: buildlm train --resume {run} {flag}"
        )
    plan = state.get("plan") or {}
    if time_budget_s is not None and state.get("finished") and plan.get("time_budget_s") == time_budget_s:
        return (
            f"{run} is finished: it used its {time_budget_s:g}s time budget (step {step}); train it "
            f"further with: buildlm train --resume {run} --train.time_budget_s {2 * time_budget_s:g} "
            "(the budget counts the whole run, so this adds about as much again)"
        )
    return None
