"""Judging a topic recommender: the baselines, the hold-out report and its Markdown, the
comparison with the generator's truth, the promotion gate's slices, behavioural checks and
request samples, and the refitted winner's report with its plots."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from features.frames import SourceFrames, from_snapshot
from features.recommend import TABLES as RECOMMEND_TABLES
from features.recommend import candidate_topics
from training import reports
from training.gap import gap_closed
from training.metrics import binary_classification
from training.slices import student_topic_slices
from training.topic_recommender.data import LABEL, RecommenderData
from training.topic_recommender.estimator import make_scorer, ndcg_by_student, rank_quality
from training.topic_recommender.inference import (
    CARD,
    INPUT_COLUMNS,
    KEYS,
    MasteryRule,
    TopicRecommenderPyfunc,
    TwoStageScorer,
    feature_matrix,
    with_context,
)
from training.topic_recommender.params import TopicRecommenderParams

Predict = Callable[[pd.DataFrame], pd.DataFrame]
# The content-only baseline: what the topic is and what the student said they want, no
# practice history and no collaborative signal.
PROFILE_FEATURES = (
    "interested",
    "syllabus_weight",
    "position",
    "mean_difficulty",
    "difficulty_gap",
    "paper_frequency",
)
# The content-only baseline's scorer: fixed, so a registered version is compared with the
# same baseline whenever it is evaluated.
BASELINE_SCORER = {
    "gb_iterations": 100,
    "gb_learning_rate": 0.1,
    "gb_leaf_nodes": 16,
    "gb_l2": 0.01,
    "gb_min_leaf": 100,
}


def popularity_score(reference: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Baseline: how much the training students practised each topic over the last 30
    days before the origin."""
    popularity = reference.groupby("topic_id")["attempts_last_30d"].sum()
    return rows["topic_id"].map(popularity).fillna(0.0).to_numpy(dtype=float)


def weakest_first_score(rows: pd.DataFrame) -> np.ndarray:
    """Baseline: lowest accuracy so far first; topics never practised after every practised
    one, in syllabus order."""
    accuracy = rows["accuracy"].to_numpy()
    return np.where(np.isnan(accuracy), -2.0 - 0.01 * rows["position"].to_numpy(), -accuracy)


def truth_relevance(truth_dir: Path, origin: datetime, top: int) -> pd.DataFrame | None:
    """The generator's expected score gain of each student's `top` topics at the mastery
    snapshot nearest `origin` (other topics 0); None without ground truth."""
    path = truth_dir / "mastery.parquet"
    if not path.exists():
        return None
    mastery = pd.read_parquet(path, columns=["user_id", "topic_id", "as_of", "expected_score_gain"])
    dates = pd.to_datetime(mastery["as_of"])
    distance = (dates - pd.Timestamp(origin.date())).abs()
    snapshot = mastery[dates == dates[distance == distance.min()].iloc[0]].copy()
    order = snapshot.groupby("user_id")["expected_score_gain"].rank(ascending=False, method="first")
    snapshot["truth_gain"] = snapshot["expected_score_gain"].where(order <= top, 0.0)
    return snapshot[["user_id", "topic_id", "truth_gain"]]


def holdout_truth(
    truth_dir: Path | None, data: RecommenderData, p: TopicRecommenderParams
) -> pd.DataFrame | None:
    """`truth_relevance` at the hold-out origin, when the generator's truth is at hand."""
    return truth_relevance(truth_dir, data.holdout_origin, p.truth_top_k) if truth_dir else None


def model_scores(predict: Predict, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A model's ranking score (minus its rank; -inf for a topic it does not recommend) and
    confidence (NaN there) for each candidate row, through its `predict`."""
    served = predict(rows[INPUT_COLUMNS])
    placed = rows[KEYS].merge(served[[*KEYS, "rank", "confidence"]], on=KEYS, how="left")
    return (
        -placed["rank"].fillna(np.inf).to_numpy(dtype=float),
        placed["confidence"].to_numpy(dtype=float),
    )


def method_metrics(
    rows: pd.DataFrame,
    score: np.ndarray,
    probability: np.ndarray | None,
    p: TopicRecommenderParams,
    topics: int,
) -> dict[str, float]:
    """Ranking quality, catalogue coverage and (for a method with probabilities)
    calibration on the topics it recommends; mastered topics are never recommended."""
    shown = np.isfinite(score) & ~MasteryRule(p.mastery_min_attempts, p.mastery_accuracy).applies(
        rows
    )
    metrics = rank_quality(rows, score, p)
    metrics["coverage"] = coverage(rows, score, shown, p.top_k) / topics
    if probability is not None:
        calibration = binary_classification(rows[LABEL].to_numpy()[shown], probability[shown])
        metrics |= {"brier": calibration["brier"], "ece": calibration["ece"]}
    return metrics


def evaluate(
    predict: Predict,
    data: RecommenderData,
    p: TopicRecommenderParams,
    seed: int,
    truth: pd.DataFrame | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Hold-out metrics of a model (its `predict` on `candidate_topics` rows, as logged)
    next to the baselines on the same students and origin, and (with ground truth) against
    the generator's best topics. Returns the report and the confidence of each method that
    gives one (NaN where it recommends nothing), for the calibration plot."""
    holdout = data.holdout
    ranking, confidence = model_scores(predict, holdout)
    y = holdout[LABEL].to_numpy()
    with threadpool_limits(1):  # see `training.topic_recommender.estimator.refit`
        content = make_scorer(BASELINE_SCORER, seed).fit(
            feature_matrix(data.train, PROFILE_FEATURES), data.train[LABEL].to_numpy()
        )
    probabilities = {
        "model": confidence,
        "baseline_content_only": content.predict_proba(feature_matrix(holdout, PROFILE_FEATURES))[
            :, 1
        ],
    }
    scores = {
        "model": ranking,
        "baseline_popularity": popularity_score(data.reference, holdout),
        "baseline_weakest_first": weakest_first_score(holdout),
        "baseline_content_only": probabilities["baseline_content_only"],
    }
    report: dict[str, Any] = {
        name: method_metrics(holdout, score, probabilities.get(name), p, len(data.topics))
        for name, score in scores.items()
    }
    if truth is not None:
        on_truth = holdout.merge(truth, on=KEYS, how="left")
        gain = on_truth["truth_gain"].fillna(0.0).to_numpy()
        report["against_truth"] = {
            name: rank_quality(holdout, score, p, relevance=gain) for name, score in scores.items()
        }
        # The oracle ranks by the true gain itself (mastered topics still left out): the
        # best ranking of these candidates the hidden state allows.
        report["against_truth"]["oracle"] = rank_quality(holdout, gain, p, relevance=gain)
        report["gap_closed"] = {
            "ndcg_10_against_truth": truth_gap(holdout, scores | {"oracle": gain}, gain, p, seed)
        }
    report["positive_rate"] = float(y.mean())
    return report, probabilities


def truth_gap(
    holdout: pd.DataFrame,
    scores: dict[str, np.ndarray],
    gain: np.ndarray,
    p: TopicRecommenderParams,
    seed: int,
) -> dict[str, float]:
    """Gap closed on NDCG@10 against the truth, with its interval over students."""
    per_student = pd.DataFrame(
        {name: ndcg_by_student(holdout, score, p, gain) for name, score in scores.items()}
    )
    values = {name: per_student[name].to_numpy() for name in scores}
    return gap_closed(
        per_student.index.to_numpy(),
        lambda rows: {name: float(v[rows].mean()) for name, v in values.items()},
        [name for name in scores if name.startswith("baseline_")],
        seed=seed,
    ).report()


def report_markdown(
    report: dict[str, Any], data: RecommenderData, p: TopicRecommenderParams
) -> str:
    """The report's Markdown tables: every method on the source labels, then against the
    generator's truth when it was at hand."""
    columns = ["ndcg_5", f"ndcg_{p.top_k}", f"recall_{p.top_k}", "coverage", "brier", "ece"]
    markdown = reports.markdown_table(
        f"{CARD.name}: hold-out (other students, origin {data.holdout_origin:%Y-%m-%d}; "
        f"relevant = practised and improved in the next {p.label_window_days} days)",
        {k: v for k, v in report.items() if isinstance(v, dict) and "coverage" in v},
        columns,
    )
    if "against_truth" in report:
        markdown += "\n" + reports.markdown_table(
            f"against the generator's top {p.truth_top_k} topics by expected score gain",
            report["against_truth"],
            columns[:3],
        )
    if "gap_closed" in report:
        gap = report["gap_closed"]["ndcg_10_against_truth"]
        markdown += (
            "\nGap closed on NDCG@10 against the truth, (model - best baseline) / "
            f"(oracle - best baseline): {gap['value']:.3f} (95% interval over students "
            f"{gap['low']:.3f} to {gap['high']:.3f}).\n"
        )
    return markdown


def coverage(rows: pd.DataFrame, score: np.ndarray, served: np.ndarray, k: int) -> float:
    """How many distinct topics appear in anyone's top k (mastered topics left out)."""
    ranked = rows.loc[served, ["user_id", "topic_id"]].assign(score=score[served])
    top = ranked.sort_values("score", ascending=False, kind="stable").groupby("user_id").head(k)
    return float(top["topic_id"].nunique())


def refit_report(
    model: TopicRecommenderPyfunc,
    without_cf: TwoStageScorer,
    data: RecommenderData,
    p: TopicRecommenderParams,
    seed: int,
    truth: pd.DataFrame | None,
    cv_score: float,
) -> tuple[dict[str, Any], str, Callable[[Path], object]]:
    """The refitted winner's report next to the baselines (`evaluate`), plus the ablation
    (the same scorer without its collaborative part) and the cross-validation score; its
    Markdown; and what writes its plots."""
    holdout = data.holdout
    report, confidences = evaluate(lambda frame: model.predict(None, frame), data, p, seed, truth)
    ablation = without_cf.probability(with_context(holdout, p.prior_answers))
    report["ablation_without_cf"] = method_metrics(holdout, ablation, ablation, p, len(data.topics))
    report["cv_ndcg"] = cv_score
    markdown = report_markdown(report, data, p)
    shown = ~np.isnan(confidences["model"])
    methods = {k: v for k, v in report.items() if isinstance(v, dict) and "coverage" in v}

    def plots(folder: Path) -> object:
        return [
            *reports.metric_bars(
                folder,
                methods,
                ["ndcg_5", f"ndcg_{p.top_k}", f"recall_{p.top_k}"],
                "ranking.png",
            ),
            *reports.classification_plots(
                folder,
                holdout[LABEL].to_numpy()[shown],
                {name.removeprefix("baseline_"): c[shown] for name, c in confidences.items()},
                positive="relevant topics",
            ),
        ]

    return report, markdown, plots


# -- the promotion gate's methods ---------------------------------------------------------


def slice_reports(
    data: RecommenderData, predict: Predict, p: TopicRecommenderParams, params: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Hold-out ranking quality per slice the promotion gate compares: the candidate
    topic's subject, new vs long-standing students (joined under
    `promotion.new_student_days` of the whole `params` before the origin), low vs high
    recent activity (answers over the 30 days up to the origin below / at least the
    hold-out students' median).

    A slice is a subset of the candidate rows, and its NDCG is computed as the report's
    (`rank_quality`) over each student's candidates within the slice, in the order the
    model ranked them all once (mastered topics left out). For the student slices that
    is the same as grouping students: each keeps their whole ranking. For a subject it
    is the model's ordering of that subject's topics, relevance from that subject's
    topics only; the alternative (the whole list, counting only that subject's relevant
    topics) would mostly measure how the subject competes with the student's other
    subjects. `n` is the number of students averaged (those with a relevant topic in
    the slice), not rows, so `promotion.min_slice_size` counts students; `candidates`
    gives the rows."""
    holdout = data.holdout
    ranking, _ = model_scores(predict, holdout)
    masks = student_topic_slices(holdout, params, CARD.name, CARD.key)
    reports: dict[str, dict[str, float]] = {}
    for name, rows in masks.items():
        if rows.any():
            metrics = rank_quality(holdout[rows], ranking[rows], p)
            reports[name] = metrics | {"n": metrics["groups"], "candidates": float(rows.sum())}
    return reports


def behaviour_checks(
    snapshot_dir: Path, data: RecommenderData, predict: Predict, p: TopicRecommenderParams
) -> dict[str, tuple[bool, str]]:
    """The behavioural test of the training issue, on 5 hold-out students who have
    practised (the first by id): the model's own first choice among topics with
    questions sat by the origin, given many recent answers all right (every earlier
    answer on it made right, plus `mastery_min_attempts` + 5 answers over the days
    before the origin), never enters the top k; the same topic with those answers all
    wrong still does (so a model that just drops the topic, or recommends nothing, does
    not pass). Candidates are rebuilt at the hold-out origin from the edited
    `test_answers` of the snapshot under `snapshot_dir` by
    `features.recommend.candidate_topics` (the builder serving uses), not by editing
    candidate rows."""
    origin = data.holdout_origin
    practised = data.holdout.loc[data.holdout["practised"] > 0, "user_id"]
    students = sorted(practised.unique())[:5]
    name = "mastered topics are not recommended"
    control = "the same topic failing is recommended"
    if not students:
        return {name: (False, "no hold-out student has practised a topic")}
    frames = from_snapshot(snapshot_dir, RECOMMEND_TABLES)
    answerable = set(frames.as_of(origin)["questions"]["topic_id"])
    count = p.mastery_min_attempts + 5
    excluded, kept, probed = 0, 0, 0
    for user in students:
        # One student's rows, with every student's question ratings, as serving and
        # training see them (a topic's mean rating is over all students).
        mine = SourceFrames(
            frames.for_users([user]).tables | {"question_ratings": frames["question_ratings"]}
        )
        ranked = predict(candidate_topics(mine, origin)[INPUT_COLUMNS])
        choices = [int(t) for t in ranked["topic_id"] if int(t) in answerable]
        if not choices:
            continue
        target, probed = choices[0], probed + 1
        for correct in (True, False):
            rows = candidate_topics(
                with_practice_on_topic(mine, user, target, origin, correct, count), origin
            )
            served = predict(rows[INPUT_COLUMNS])
            top = set(served.loc[served["rank"] <= p.top_k, "topic_id"].astype(int))
            if correct:
                excluded += target not in top
            else:
                kept += target in top
    if probed == 0:
        return {name: (False, "no probed student has a topic with questions sat")}
    return {
        name: (
            excluded == probed,
            f"{excluded}/{probed} hold-out students' first choice out of the top "
            f"{p.top_k} with {count} recent answers all right",
        ),
        control: (
            kept == probed,
            f"{kept}/{probed} in the top {p.top_k} with those answers all wrong",
        ),
    }


def with_practice_on_topic(
    frames: SourceFrames, user: str, topic: int, origin: datetime, correct: bool, count: int
) -> SourceFrames:
    """The frames with every answer of `user` on `topic` made right (or wrong), and `count`
    more such answers on the topic's questions sat by `origin`, one an hour back from it
    (so within the last 30 days): the probe of the behavioural checks. The added rows copy
    the student's latest answer before `origin` (its test, its timing)."""
    answers = frames["test_answers"]
    questions = frames.as_of(origin)["questions"]
    on_topic = questions.loc[questions["topic_id"] == topic, "id"].to_numpy()
    edited = answers.copy()
    mine = (edited["user_id"] == user) & edited["question_id"].isin(set(on_topic))
    edited.loc[mine, "is_correct"] = correct
    own = edited[edited["user_id"] == user].sort_values("answered_at")
    earlier = own[own["answered_at"] <= pd.Timestamp(origin)]
    template = earlier.tail(1) if len(earlier) else own.head(1)
    added = template.loc[template.index.repeat(count)].reset_index(drop=True)
    added["id"] = int(answers["id"].max()) + 1 + np.arange(count)
    added["question_id"] = np.resize(on_topic, count)
    added["is_correct"] = correct
    added["answered_at"] = pd.Timestamp(origin) - pd.to_timedelta(np.arange(1, count + 1), "h")
    return SourceFrames(
        frames.tables | {"test_answers": pd.concat([edited, added], ignore_index=True)}
    )


def request_samples(data: RecommenderData, count: int) -> list[pd.DataFrame]:
    """Single-student requests as serving sends them: each of `count` hold-out students'
    candidate rows (the gate times `predict` on them)."""
    holdout = data.holdout
    students = sorted(holdout["user_id"].unique())[:count]
    return [
        holdout.loc[holdout["user_id"] == s, INPUT_COLUMNS].reset_index(drop=True) for s in students
    ]
