"""Classification metrics: accuracy, per-class precision/recall/F1, the confusion matrix.

Accuracy alone hides a lot: on unbalanced classes, always answering the largest class scores
its share. Per class c:

- **precision** = correct "c" answers / all "c" answers (when it says c, is it right?);
- **recall** = correct "c" answers / all true c examples (does it find the c's?);
- **F1** = their harmonic mean 2PR / (P + R), high only when both are.

The **confusion matrix** M[i][j] counts examples of true class i predicted as j: the diagonal
holds the correct ones, and an off-diagonal cell says which two classes the model mixes up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> list[list[int]]:
    """M[i][j] = how many examples of true class i were predicted as class j."""
    matrix = [[0] * n_classes for _ in range(n_classes)]
    for t, p in zip(y_true, y_pred, strict=True):
        matrix[t][p] += 1
    return matrix


def classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    A class never predicted has precision 0 (by convention, as scikit-learn's ``zero_division=0``).
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    n = len(names)
    matrix = confusion_matrix(y_true, y_pred, n)
    per_class = {}
    for c, name in enumerate(names):
        tp = matrix[c][c]
        predicted = sum(matrix[r][c] for r in range(n))
        support = sum(matrix[c])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    total = len(y_true)
    accuracy = sum(matrix[c][c] for c in range(n)) / total if total else 0.0
    macro_f1 = sum(v["f1"] for v in per_class.values()) / n if n else 0.0
    return {
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "n": total,
        "per_class": per_class,
        "labels": list(names),
        "confusion_matrix": matrix,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a small text table."""
    width = max(8, *(len(n) for n in report["labels"]))
    lines = [f"{'label':<{width}}  precision  recall     f1  support"]
    for name, m in report["per_class"].items():
        lines.append(
            f"{name:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:7d}"
        )
    lines.append(f"accuracy {report['accuracy']:.3f} (n={report['n']}), macro F1 {report['macro_f1']:.3f}")
    return "\n".join(lines)


def plot_confusion(
    matrix: Sequence[Sequence[int]], names: Sequence[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Draw the confusion matrix (rows: true, columns: predicted) to a PNG, atomically."""
    from buildlm.viz.figure import new_figure, save_png

    n = len(names)
    size = 2.5 + 0.7 * n
    fig = new_figure((size, size), dpi=110)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    top = max((v for row in matrix for v in row), default=0)
    for i in range(n):
        for j in range(n):
            value = matrix[i][j]
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return save_png(fig, path)
