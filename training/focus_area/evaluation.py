"""Judging a focus-area model on the hold-out: the baselines (the accuracy rule and a
logistic regression), its metrics next to theirs (and, on synthetic data, against the
generator's true weak topics), the Markdown tables and plots, the promotion gate's slices
and its behavioural checks."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binom
from sklearn.base import ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from features.focus import TABLES as FOCUS_TABLES
from features.focus import feature_matrix, topic_test_stats
from features.frames import from_snapshot
from training import reports
from training.focus_area.data import LABEL, FocusAreaData, with_answers_on_topic
from training.focus_area.estimator import best_threshold, out_of_fold
from training.focus_area.inference import CARD, INPUT_COLUMNS
from training.focus_area.params import FocusAreaParams
from training.gap import gap_closed
from training.metrics import binary_classification
from training.model_spec import Predict
from training.slices import student_topic_slices

COLUMNS = ["accuracy", "f1", "pr_auc", "roc_auc", "brier", "ece", "n"]  # of the Markdown


class ThresholdRule:
    """Baseline: weak when the (smoothed) accuracy so far is below the label's threshold."""

    def __init__(self, weak_threshold: float) -> None:
        self.weak_threshold = weak_threshold

    def weak_probability(self, frame: pd.DataFrame) -> np.ndarray:
        # Centred so that accuracy at the threshold maps to 0.5.
        return np.clip(
            0.5 + (self.weak_threshold - frame["smoothed_accuracy"].to_numpy()), 0.0, 1.0
        )


def logistic_baseline(train: pd.DataFrame, folds: int, seed: int) -> tuple[Pipeline, float]:
    """Baseline: logistic regression on the same features, with its decision threshold
    chosen the same way as the model's (on out-of-fold predictions), so F1 is compared
    fairly."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    y = train[LABEL].to_numpy()
    threshold = best_threshold(y, out_of_fold(model, train, folds, seed))
    return model.fit(feature_matrix(train), y), threshold


def model_scores(predict: Predict, examples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A model's weak probabilities and decisions on examples, through its `predict`."""
    predicted = predict(examples[INPUT_COLUMNS])
    return (
        predicted["weak_probability"].to_numpy(dtype=float),
        predicted["is_weak"].to_numpy(dtype=bool),
    )


def evaluate(
    predict: Predict,
    data: FocusAreaData,
    p: FocusAreaParams,
    seed: int,
    truth: pd.DataFrame | None,
) -> dict[str, Any]:
    """Hold-out metrics of a model (its `predict` on `topic_test_stats` rows, as logged)
    next to both baselines, on the same examples; and, when the generator's truth is at
    hand, against the true weak topics."""
    holdout = data.holdout
    y = holdout[LABEL].to_numpy()
    logistic, logistic_threshold = logistic_baseline(data.train, p.cv_folds, seed)
    rule = ThresholdRule(p.weak_threshold).weak_probability(holdout)
    regression = logistic.predict_proba(feature_matrix(holdout))[:, 1]
    scored = {
        "model": model_scores(predict, holdout),
        "baseline_accuracy_rule": (rule, rule >= 0.5),
        "baseline_logistic_regression": (regression, regression >= logistic_threshold),
    }
    report: dict[str, Any] = {
        name: binary_classification(y, probability, decisions=decided)
        for name, (probability, decided) in scored.items()
    }
    if truth is not None:
        on_truth = holdout.merge(truth, on=["user_id", "topic_id"], how="inner")
        if len(on_truth):
            keep = holdout.set_index(["user_id", "topic_id"]).index.isin(
                on_truth.set_index(["user_id", "topic_id"]).index
            )
            true_weak = on_truth["is_weak"].astype(int).to_numpy()
            report["against_truth"] = {
                name: binary_classification(true_weak, probability[keep], decisions=decided[keep])
                for name, (probability, decided) in scored.items()
            }
            # How far the label itself agrees with the truth (scored by how far the later
            # result falls under the threshold): a label that measures the student, not
            # the draw of questions, agrees better.
            later = holdout["later_accuracy"].to_numpy()[keep]
            report["against_truth"]["label"] = binary_classification(
                true_weak,
                np.clip(0.5 + p.weak_threshold - later, 0.0, 1.0),
                decisions=y[keep].astype(bool),
            )
            if p.label_basis == "raw":  # the oracle below is the raw label's
                report |= with_oracle(scored, y, keep, on_truth, holdout, p, seed)
    return report


def oracle_weak_probability(on_truth: pd.DataFrame, p: FocusAreaParams) -> np.ndarray:
    """The chance the label comes out weak given the student's true state at the origin:
    P(k/n < weak_threshold) for k right answers out of the n the window held, each right
    with the generator's expected accuracy on the topic. No model can know more about
    the label from the past (what is left is the luck of the questions drawn)."""
    n = on_truth["later_answers"].to_numpy(dtype=float)
    most_right = np.ceil(p.weak_threshold * n) - 1  # k < threshold * n
    return np.asarray(
        binom.cdf(most_right, n, on_truth["expected_accuracy"].to_numpy(dtype=float)),
        dtype=float,
    )


def with_oracle(
    scored: dict[str, tuple[np.ndarray, np.ndarray]],
    y: np.ndarray,
    keep: np.ndarray,
    on_truth: pd.DataFrame,
    holdout: pd.DataFrame,
    p: FocusAreaParams,
    seed: int,
) -> dict[str, Any]:
    """The oracle's metrics on the label (its F1-best cut chosen on the hold-out itself:
    an upper bound, so gap closed errs low) and the F1 gap the model closes."""
    truth_y = y[keep].astype(bool)
    oracle = oracle_weak_probability(on_truth, p)
    oracle_weak = oracle >= best_threshold(truth_y.astype(int), oracle)
    decisions = {name: decided[keep].astype(bool) for name, (_, decided) in scored.items()}
    decisions["oracle"] = oracle_weak

    def f1_by_method(rows: np.ndarray) -> dict[str, float]:
        return {name: _f1(truth_y[rows], weak[rows]) for name, weak in decisions.items()}

    gap = gap_closed(
        holdout["user_id"].to_numpy()[keep],
        f1_by_method,
        [name for name in scored if name.startswith("baseline_")],
        seed=seed,
    )
    return {
        "oracle": binary_classification(truth_y, oracle, decisions=oracle_weak),
        "gap_closed": {"f1": gap.report()},
    }


def _f1(y: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of the positive class (0 when nothing is either), as sklearn's with
    zero_division=0, fast enough for a thousand bootstrap draws."""
    both = int(y.sum() + predicted.sum())
    return 2.0 * float((y & predicted).sum()) / both if both else 0.0


def truth_at(truth_dir: Path, moment: datetime) -> pd.DataFrame | None:
    """The generator's true weak topics at the latest snapshot at or before `moment`
    (None when there is no ground truth: on a real Supabase)."""
    path = truth_dir / "mastery.parquet"
    if not path.exists():
        return None
    mastery = pd.read_parquet(
        path, columns=["user_id", "topic_id", "as_of", "is_weak", "expected_accuracy"]
    )
    dates = pd.to_datetime(mastery["as_of"])
    eligible = dates[dates <= pd.Timestamp(moment.date())]
    if eligible.empty:
        return None
    return mastery[dates == eligible.max()][["user_id", "topic_id", "is_weak", "expected_accuracy"]]


def report_with_markdown(
    predict: Predict,
    data: FocusAreaData,
    p: FocusAreaParams,
    seed: int,
    truth_dir: Path | None,
) -> tuple[dict[str, Any], str]:
    """A model's hold-out report next to the baselines, and its Markdown tables."""
    truth = truth_at(truth_dir, data.holdout_origin) if truth_dir else None
    report = evaluate(predict, data, p, seed, truth)
    markdown = reports.markdown_table(
        f"{CARD.name}: hold-out (other students, origin {data.holdout_origin:%Y-%m-%d})",
        {k: v for k, v in report.items() if k not in ("against_truth", "gap_closed")},
        COLUMNS,
    )
    if "gap_closed" in report:
        f1 = report["gap_closed"]["f1"]
        markdown += (
            f"\nGap closed on F1 (model - best baseline) / (oracle - best baseline): "
            f"{f1['value']:.3f} (95% interval over students {f1['low']:.3f} to "
            f"{f1['high']:.3f}).\n"
        )
    if "against_truth" in report:
        markdown += "\n" + reports.markdown_table(
            "against the generator's true weak topics", report["against_truth"], COLUMNS
        )
    return report, markdown


def slice_metrics(
    holdout: pd.DataFrame, predict: Predict, params: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Hold-out metrics per slice the promotion gate compares (each with `n`): the
    topic's subject, new vs long-standing students (joined under
    `promotion.new_student_days` before the origin), low vs high recent activity
    (answers over the last 30 days below / at least the hold-out students' median)."""
    y = holdout[LABEL].to_numpy()
    probability, decided = model_scores(predict, holdout)
    masks = student_topic_slices(holdout, params, CARD.name, CARD.key)
    return {
        name: binary_classification(y[rows], probability[rows], decisions=decided[rows])
        for name, rows in masks.items()
        if rows.any()
    }


def behaviour_checks(
    snapshot_dir: Path, data: FocusAreaData, predict: Predict
) -> dict[str, tuple[bool, str]]:
    """The behavioural test of the training issue, on hold-out (student, topic) pairs
    with at least 10 answers (the first 5 by student and topic): with every answer on
    the topic made wrong, the topic is flagged weak; made right, its weak probability
    falls below half of that. Features are rebuilt at the hold-out origin from the
    snapshot's edited answers by `features.focus.topic_test_stats` (the builder serving
    uses), not by editing feature rows, so they stay coherent with each other."""
    busy = data.holdout[data.holdout["attempts"] >= 10].sort_values(["user_id", "topic_id"])
    pairs = list(zip(busy["user_id"].head(5), busy["topic_id"].head(5), strict=True))
    if not pairs:
        return {"failing a topic flags it weak": (False, "no hold-out pair has 10 answers")}
    frames = from_snapshot(snapshot_dir, FOCUS_TABLES)
    verdicts: dict[bool, list[pd.Series]] = {False: [], True: []}
    for user, topic in pairs:
        mine = frames.for_users([user])
        for correct in (False, True):
            rebuilt = topic_test_stats(
                with_answers_on_topic(mine, user, topic, correct), data.holdout_origin
            )
            row = rebuilt[rebuilt["topic_id"] == topic]
            verdicts[correct].append(predict(row[INPUT_COLUMNS]).iloc[0])
    flagged = sum(bool(v["is_weak"]) for v in verdicts[False])
    lowered = sum(
        float(right["weak_probability"]) < float(wrong["weak_probability"]) / 2
        for wrong, right in zip(verdicts[False], verdicts[True], strict=True)
    )
    n = len(pairs)
    return {
        "failing every question of a topic flags it weak": (
            flagged == n,
            f"{flagged}/{n} hold-out pairs flagged weak with every answer wrong",
        ),
        "answering a topic right lowers its weak probability": (
            lowered == n,
            f"{lowered}/{n} pairs at under half the all-wrong probability when all right",
        ),
    }


def plots(
    folder: Path, holdout: pd.DataFrame, estimator: ClassifierMixin, p: FocusAreaParams
) -> object:
    """The hold-out classification plots of the fitted classifier and the accuracy rule."""
    return reports.classification_plots(
        folder,
        holdout[LABEL].to_numpy(),
        {
            "model": estimator.predict_proba(feature_matrix(holdout))[:, 1],
            "accuracy rule": ThresholdRule(p.weak_threshold).weak_probability(holdout),
        },
    )
