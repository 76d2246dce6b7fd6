"""Numbers that tell how training goes, and where they are written.

- *loss* is the mean cross-entropy in nats per token; *perplexity* ``exp(loss)`` is "as unsure
  as a uniform choice among that many tokens".
- Neither compares across tokenizers (a bigger vocabulary has fewer, harder tokens).
  *Bits per byte* does: ``loss * tokens / (bytes * ln 2)`` spreads the cost of the text over its
  UTF-8 bytes, whatever the tokenizer.
- *MFU* (model FLOPs utilisation) is the share of the hardware's peak arithmetic the training
  actually uses: ``flops_per_token * tokens_per_second / peak_flops``. The peak is a datasheet
  figure on GPUs; here it defaults to a *measured* large matmul on the device, the best rate
  this machine reaches in practice (:class:`PeakFlops`, which also keeps MFU at or below 100%
  when that measurement was made on a busy machine).

:class:`MetricsLogger` appends every record to ``metrics.csv`` (and TensorBoard when the package
is installed); :func:`plot_losses` draws the loss curves to a PNG (with `buildlm.viz`; no display needed).
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any

import torch

from buildlm.atomic import atomic_file
from buildlm.eval.metrics import bits_per_byte, perplexity  # noqa: F401  (re-exported)


def measure_peak_flops(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, rounds: int = 5
) -> float:
    """FLOP/s of a large square matmul on ``device``: the practical peak that MFU is measured against.

    An ``n x n`` by ``n x n`` product costs ``2 n^3`` floating-point operations. It is timed
    ``rounds`` times and the *best* time kept: other processes can only slow a round down, so
    the fastest one is the closest to what the hardware does on its own.
    """
    device = torch.device(device)
    n = 1024 if device.type == "cpu" else 4096
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up: the first product pays for allocations and kernel selection
    best = float("inf")
    for _ in range(rounds):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


class PeakFlops:
    """The peak FLOP/s that MFU divides by, and where it came from.

    Given (``--train.peak_flops``, a datasheet figure) or measured at start-up. A measurement on a
    busy machine comes out too low, and MFU then shows impossible values over 100%. So whenever
    training runs faster than the peak allows, the peak is measured again and raised to the best
    of that measurement and the rate training itself reached: training cannot beat the hardware,
    so the rate it reached is a lower bound of the true peak. :meth:`mfu` is then at most 1.
    """

    MAX_REMEASURES = 3  # each costs a few matmuls; a machine that stays busy is not re-timed forever

    def __init__(self, device: torch.device | str, given: float | None = None) -> None:
        self.device = torch.device(device)
        if given is not None:
            self.value, self.source = float(given), "from --train.peak_flops"
        else:
            self.value = measure_peak_flops(self.device)
            self.source = "measured at start-up: the best of 5 timed 1024x1024 matmuls"
        self.remeasures = 0
        self.raised = False

    def describe(self) -> str:
        return f"MFU is measured against a peak of {self.value / 1e9:,.1f} GFLOP/s ({self.source})"

    def mfu(self, flops_per_second: float) -> float:
        """Model FLOPs utilisation of a training rate, raising the peak first if the rate exceeds it."""
        if flops_per_second > self.value:
            if self.remeasures < self.MAX_REMEASURES and self.source.startswith("measured"):
                self.remeasures += 1
                self.value = max(self.value, measure_peak_flops(self.device))
            self.value = max(self.value, flops_per_second)
            self.raised = True
        return min(mfu(1.0, flops_per_second, self.value), 1.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def mfu(flops_per_token: float, tokens_per_second: float, peak_flops: float) -> float:
    """Model FLOPs utilisation in [0, 1] (can exceed 1 only if ``peak_flops`` is underestimated)."""
    return flops_per_token * tokens_per_second / peak_flops if peak_flops > 0 else float("nan")


COLUMNS = ["step", "train_loss", "lr", "tokens_per_s", "mfu", "tokens", "val_loss", "val_ppl", "val_bpb"]


class MetricsLogger:
    """Appends metric records to ``run_dir/metrics.csv`` and TensorBoard (when installed).

    Records are dicts such as ``{"step": 10, "train_loss": 4.2, "lr": 1e-3}``; the CSV has one
    column per key ever seen (the header is rewritten when a new key appears), blanks elsewhere.
    """

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True, resume: bool = False) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = list(COLUMNS)
        if resume and self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            # A run killed mid-write can leave half a line: drop it, the resumed run redoes it.
            text = text[: text.rfind("\n") + 1]
            reader = csv.DictReader(io.StringIO(text, newline=""))
            self.columns += [c for c in reader.fieldnames or [] if c not in self.columns]
            self.rows = [{k: _parse(v) for k, v in row.items() if v not in ("", None)} for row in reader]
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:  # the tensorboard package is optional
                self._tb = None

    def drop_after(self, step: int) -> None:
        """Forget records past ``step`` (a resumed run redoes them)."""
        self.rows = [r for r in self.rows if r.get("step", 0) <= step]
        self._rewrite()

    def log(self, record: dict[str, Any]) -> None:
        self.rows.append(dict(record))
        new = [k for k in record if k not in self.columns]
        if new:
            self.columns += new
            self._rewrite()
        else:
            with self.path.open("a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, self.columns).writerow(record)
        if self._tb is not None:
            step = int(record.get("step", 0))
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)

    def _rewrite(self) -> None:
        with atomic_file(self.path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of one metric."""
        pairs = [(int(r["step"]), float(r[key])) for r in self.rows if key in r and "step" in r]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _parse(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def plot_losses(
    logger: MetricsLogger, path: str | os.PathLike, baselines: dict[str, float] | None = None
) -> Path | None:
    """Train and val loss against step, with baseline levels as dashed lines; written atomically.

    Drawn by `buildlm.viz.plot_loss_curves` from the run's metrics.csv (no pyplot, no global
    backend switch, so a notebook that trains keeps showing its own plots).
    """
    from buildlm.viz.losses import plot_loss_curves

    if not any(logger.series(key)[0] for key in ("train_loss", "val_loss")):
        return None  # nothing to draw yet (e.g. a run whose every step was skipped)
    plot_loss_curves(logger.path, path, baselines=baselines, labels=["run"], dpi=110)
    return Path(path)
