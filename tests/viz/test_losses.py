"""Loss curves are drawn from the metrics.csv the trainer's MetricsLogger writes."""

import pytest

from buildlm.train.metrics import MetricsLogger
from buildlm.viz import plot_loss_curves, read_metrics


def _write_run(folder, scale=1.0):
    """A run folder as training leaves it: train loss every step, val loss every 4th."""
    logger = MetricsLogger(folder, tensorboard=False)
    logger.drop_after(0)  # what the Trainer does first: writes the header
    for step in range(1, 11):
        record = {"step": step, "train_loss": scale * (6.0 - 0.3 * step), "lr": 1e-3}
        if step % 4 == 0:
            record |= {"val_loss": scale * (6.2 - 0.3 * step), "val_ppl": 2.0}
        logger.log(record)
    logger.close()
    return folder


def test_curves_hold_the_logged_values(tmp_path, png_size):
    run = _write_run(tmp_path / "run-a")
    fig = plot_loss_curves(
        run, tmp_path / "loss.png", baselines={"bigram": 4.5}, figsize=(4, 3), dpi=50
    )
    lines = {
        line.get_label(): line for line in fig.axes[0].get_lines() if line.get_label()[0] != "_"
    }
    assert set(lines) == {"train_loss", "val_loss"}
    assert list(lines["train_loss"].get_xdata()) == list(range(1, 11))
    assert list(lines["train_loss"].get_ydata()) == pytest.approx(
        [6.0 - 0.3 * s for s in range(1, 11)]
    )
    assert list(lines["val_loss"].get_xdata()) == [4, 8]  # the blank rows are skipped
    assert list(lines["val_loss"].get_ydata()) == pytest.approx([6.2 - 1.2, 6.2 - 2.4])
    baseline = [line for line in fig.axes[0].get_lines() if list(line.get_ydata()) == [4.5, 4.5]]
    assert len(baseline) == 1
    assert png_size(tmp_path / "loss.png") == (200, 150)


def test_several_runs_and_a_csv_path(tmp_path):
    a = _write_run(tmp_path / "a")
    b = _write_run(tmp_path / "b", scale=0.5)
    fig = plot_loss_curves([a, b / "metrics.csv"], tmp_path / "both.png", metrics=["train_loss"])
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["a: train_loss", "b: train_loss"]
    assert fig.axes[0].get_lines()[1].get_ydata()[0] == pytest.approx(0.5 * 5.7)
    assert read_metrics(b)["lr"] == (list(range(1, 11)), [1e-3] * 10)


def test_missing_run_or_metric_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        plot_loss_curves(tmp_path / "nowhere", tmp_path / "x.png")
    run = _write_run(tmp_path / "run")
    with pytest.raises(ValueError, match="has none of the metrics.*train_loss"):
        plot_loss_curves(run, tmp_path / "x.png", metrics=["accuracy"])
    assert not (tmp_path / "x.png").exists()
