"""Loss curves of one or more training runs, read from their ``metrics.csv``.

Every run folder written by ``buildlm train`` or ``buildlm finetune`` holds a ``metrics.csv``
(`buildlm.train.metrics.MetricsLogger`): one row per logged step, one column per metric, blank
where a step did not log that metric (validation runs only every ``eval_interval`` steps).
The trainer already draws ``loss.png`` with `buildlm.train.metrics.plot_losses` while it runs;
this draws the same curves afterwards, at any size, and for several runs on one set of axes,
which is how two runs (two learning rates, two model sizes) are compared.

Reading the picture: the train loss (noisy, every step) and the validation loss (on text the
model never trained on) should fall together; a validation loss that turns up while the train
loss keeps falling is overfitting. Dashed lines mark baselines (a uniform guess is
ln(vocab_size)); a model that does not get below the bigram baseline has learned no more than
"which token follows which".
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from buildlm.viz.figure import new_figure, save_png

METRICS_FILE = "metrics.csv"


def metrics_path(run: str | os.PathLike) -> Path:
    """``run/metrics.csv`` for a run folder, or ``run`` itself when it is a CSV file."""
    path = Path(run)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} not found; pass a run folder written by `buildlm train` (it holds "
            f"{METRICS_FILE}) or the path of a metrics CSV"
        )
    return path


def read_metrics(run: str | os.PathLike) -> dict[str, tuple[list[int], list[float]]]:
    """Every metric of a run as ``{name: (steps, values)}``, blanks skipped.

    ``run`` is a run folder or a metrics CSV (it needs a ``step`` column).
    """
    path = metrics_path(run)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "step" not in (reader.fieldnames or []):
            raise ValueError(f"{str(path)!r} has no 'step' column; it is not a metrics CSV")
        series: dict[str, tuple[list[int], list[float]]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                step = int(float(row["step"]))
                for key, value in row.items():
                    if key != "step" and value not in ("", None):
                        steps, values = series.setdefault(key, ([], []))
                        steps.append(step)
                        values.append(float(value))
            except ValueError as err:
                raise ValueError(f"{path}:{line}: not a number ({err})") from None
    return series


def plot_loss_curves(
    runs: str | os.PathLike | Sequence[str | os.PathLike],
    path: str | os.PathLike,
    *,
    metrics: Sequence[str] = ("train_loss", "val_loss"),
    baselines: dict[str, float] | None = None,
    labels: Sequence[str] | None = None,
    log_y: bool = False,
    figsize: tuple[float, float] = (7.0, 4.5),
    dpi: float = 100,
) -> Figure:
    """Draw ``metrics`` against step for one run or several; write a PNG and return the figure.

    ``runs``: a run folder or metrics CSV, or a list of them (one colour per run, one line
    style per metric). ``labels`` names the runs in the legend (default: the folder names).
    ``baselines`` draws a dashed horizontal line per entry, e.g. ``{"bigram": 4.48}``.
    """
    run_list = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
    if not run_list:
        raise ValueError("no run given; pass a run folder or a metrics CSV")
    if labels is not None and len(labels) != len(run_list):
        raise ValueError(f"{len(labels)} labels for {len(run_list)} runs; give one label per run")
    names = list(labels) if labels is not None else [_run_name(r) for r in run_list]

    fig = new_figure(figsize, dpi)
    ax = fig.add_subplot()
    styles = ["-", "--", ":", "-."]
    for i, (run, name) in enumerate(zip(run_list, names, strict=True)):
        series = read_metrics(run)
        missing = [m for m in metrics if m not in series]
        if len(missing) == len(metrics):
            raise ValueError(
                f"{name} has none of the metrics {list(metrics)}; it has: {', '.join(series)}"
            )
        color = f"C{i}"
        for j, metric in enumerate(m for m in metrics if m in series):
            steps, values = series[metric]
            label = metric if len(run_list) == 1 else f"{name}: {metric}"
            marker = "o" if len(steps) <= 50 and metric.startswith("val") else None
            ax.plot(steps, values, styles[j % len(styles)], color=color, label=label,
                    marker=marker, markersize=3)  # fmt: skip
    for name, value in (baselines or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1, color="gray")
        ax.annotate(f"{name} baseline", (0, value), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(4, 3), fontsize=8, color="gray")  # fmt: skip
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)" if all("loss" in m for m in metrics) else "value")
    ax.grid(alpha=0.3)
    ax.legend()
    save_png(fig, path)
    return fig


def _run_name(run: str | os.PathLike) -> str:
    path = Path(run)
    if path.is_dir():
        return path.name
    return path.parent.name if path.name == METRICS_FILE else path.stem
