"""Metrics shared by the models' evaluations."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    roc_auc_score,
)


def expected_calibration_error(
    y_true: np.ndarray, probability: np.ndarray, bins: int = 10
) -> float:
    """Mean gap between predicted probability and observed frequency, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            error += in_bin.mean() * abs(probability[in_bin].mean() - y_true[in_bin].mean())
    return float(error)


def binary_classification(
    y_true: np.ndarray,
    probability: np.ndarray,
    threshold: float = 0.5,
    decisions: np.ndarray | None = None,
) -> dict[str, float]:
    """Accuracy, F1, PR-AUC and ROC-AUC of the positive class, and calibration. The
    decisions are `probability >= threshold` unless given (as a model outputs them)."""
    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(probability, dtype=float), 0.0, 1.0)
    predicted = (p >= threshold if decisions is None else np.asarray(decisions)).astype(int)
    both_classes = len(np.unique(y)) == 2
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "pr_auc": float(average_precision_score(y, p)) if both_classes else float("nan"),
        "roc_auc": float(roc_auc_score(y, p)) if both_classes else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "positive_rate": float(y.mean()),
        "n": float(len(y)),
    }


def ranking_metrics(
    groups: np.ndarray, score: np.ndarray, relevance: np.ndarray, k: int
) -> dict[str, float]:
    """Mean NDCG@k and recall@k over the groups (e.g. students) that have any relevant
    item (`ranking_by_group`), and how many groups that is."""
    by_group = ranking_by_group(groups, score, relevance, k)
    empty = by_group.empty
    return {
        f"ndcg_{k}": float("nan") if empty else float(by_group["ndcg"].mean()),
        f"recall_{k}": float("nan") if empty else float(by_group["recall"].mean()),
        "groups": float(len(by_group)),
    }


def ranking_by_group(
    groups: np.ndarray, score: np.ndarray, relevance: np.ndarray, k: int
) -> pd.DataFrame:
    """NDCG@k and recall@k of each group (e.g. student) that has any relevant item,
    indexed by group. Each group's items are ranked by `score`, highest first; an item
    scored -inf is not recommended (it never enters a top k). `relevance` may be graded
    (recall counts items with relevance > 0)."""
    frame = pd.DataFrame(
        {"group": groups, "score": score, "relevance": np.asarray(relevance, dtype=float)}
    )
    frame["hit"] = (frame["relevance"] > 0).astype(float)
    frame = frame.sort_values(["group", "score"], ascending=[True, False], kind="stable")
    position = frame.groupby("group", sort=False).cumcount().to_numpy()
    discount = 1.0 / np.log2(position + 2.0)
    shown = (position < k) & np.isfinite(frame["score"].to_numpy())
    by_group = frame.groupby("group", sort=False)
    dcg = (frame["relevance"] * discount * shown).groupby(frame["group"], sort=False).sum()
    found = (frame["hit"] * shown).groupby(frame["group"], sort=False).sum()
    ideal = frame.sort_values(["group", "relevance"], ascending=[True, False], kind="stable")
    ideal_position = ideal.groupby("group", sort=False).cumcount().to_numpy()
    idcg = (
        (ideal["relevance"] / np.log2(ideal_position + 2.0) * (ideal_position < k))
        .groupby(ideal["group"], sort=False)
        .sum()
    )
    relevant = by_group["hit"].sum()
    scored = relevant[relevant > 0].index
    return pd.DataFrame(
        {"ndcg": dcg[scored] / idcg[scored], "recall": found[scored] / relevant[scored]}
    )


def precision_at_k(groups: np.ndarray, score: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Mean share of relevant items among each group's top k by `score` (ties kept in
    input order, as in `ranking_metrics`)."""
    frame = pd.DataFrame({"group": groups, "score": score, "relevant": relevant}).astype(
        {"relevant": float}
    )
    frame = frame.sort_values(["group", "score"], ascending=[True, False], kind="stable")
    top = frame[frame.groupby("group", sort=False).cumcount() < k]
    return float(top.groupby("group", sort=False)["relevant"].sum().div(k).mean())


def forecast_errors(
    y_true: np.ndarray,
    point: np.ndarray,
    interval: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """MAE and bias of a point forecast; with a (lower, upper) interval, the share of
    outcomes inside it and its mean width."""
    y = np.asarray(y_true, dtype=float)
    error = np.asarray(point, dtype=float) - y
    metrics = {"mae": float(np.abs(error).mean()), "bias": float(error.mean())}
    if interval is not None:
        lower, upper = (np.asarray(bound, dtype=float) for bound in interval)
        metrics["coverage"] = float(((y >= lower) & (y <= upper)).mean())
        metrics["width"] = float((upper - lower).mean())
    return metrics
