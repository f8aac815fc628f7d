"""Evaluation reports: JSON for machines, a short Markdown table for people (a CI summary
or a pull-request comment), and plots, written to a folder and logged to MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display here or in CI
import matplotlib.pyplot as plt
import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown_table(title: str, rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    """One row per scored method (the model and its baselines), one column per metric."""
    lines = [
        f"### {title}",
        "",
        "| method | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, metrics in rows.items():
        lines.append(
            f"| {name} | " + " | ".join(_fmt(metrics.get(c, float("nan"))) for c in columns) + " |"
        )
    return "\n".join(lines) + "\n"


def classification_plots(
    folder: Path, y: np.ndarray, scored: dict[str, np.ndarray], positive: str = "weak class"
) -> list[Path]:
    """Precision-recall and reliability (calibration) curves of every scored method."""
    paths = []
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, probability in scored.items():
        precision, recall, _ = precision_recall_curve(y, probability)
        axes[0].plot(recall, precision, label=name)
        observed, predicted = calibration_curve(
            y, np.clip(probability, 0, 1), n_bins=10, strategy="quantile"
        )
        axes[1].plot(predicted, observed, marker="o", label=name)
    axes[0].set(xlabel="recall", ylabel="precision", title=f"Precision-recall ({positive})")
    axes[1].plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes[1].set(xlabel="predicted probability", ylabel="observed frequency", title="Calibration")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    path = folder / "curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    paths.append(path)
    return paths


def metric_bars(
    folder: Path, rows: dict[str, dict[str, float]], columns: list[str], name: str
) -> list[Path]:
    """Grouped bars: one group per metric, one bar per method (the model and baselines)."""
    figure, axis = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(rows), 1)
    positions = np.arange(len(columns))
    for index, (method, metrics) in enumerate(rows.items()):
        values = [metrics.get(c, float("nan")) for c in columns]
        axis.bar(positions + index * width, values, width, label=method)
    axis.set_xticks(positions + width * (len(rows) - 1) / 2, columns)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = folder / name
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]


def write(folder: Path, report: dict[str, Any], markdown: str) -> list[Path]:
    """Write the JSON and Markdown report into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "evaluation.json"
    json_path.write_text(json.dumps(report, indent=2, default=float))
    md_path = folder / "evaluation.md"
    md_path.write_text(markdown)
    return [json_path, md_path]
