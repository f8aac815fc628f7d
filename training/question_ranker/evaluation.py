"""Judging the question ranker: its ranking report next to the baselines (frequency,
recency-weighted frequency, TF-IDF similarity), the rolling hold-out, the promotion gate's
hold-out, slices and behavioural check, the comparison with the generator's held-back next
paper, the Markdown tables and the plots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve

from features.frames import SourceFrames, from_snapshot
from features.questions import (
    CANDIDATE_COLUMNS,
    RECENT_YEARS,
    TABLES,
    TextReference,
    past_questions,
    question_history,
    rows_for_texts,
)
from features.text import EmbeddingCache
from training import reports  # also the Agg backend, before any figure
from training.metrics import binary_classification, precision_at_k, ranking_metrics
from training.model_spec import Predict
from training.question_ranker.data import CutOff, RankerData, grades, list_ids, lists_of
from training.question_ranker.estimator import RankerConfig, fit_ranker
from training.question_ranker.inference import CARD, QuestionRankerPyfunc, expected_gain
from training.question_ranker.params import QuestionRankerParams


def ranking_report(
    frame: pd.DataFrame,
    score: np.ndarray,
    topic_probability: np.ndarray | None,
    repeat_probability: np.ndarray | None,
    k: int,
) -> dict[str, float]:
    """NDCG@k (gains 2^grade - 1), precision@k of the question itself coming back and of its
    topic coming up, averaged over the lists; calibration of each probability (NaN for a
    method that gives none)."""
    grade = frame["grade"].to_numpy()
    groups = list_ids(frame)
    report = {
        f"ndcg_{k}": ranking_metrics(groups, score, 2.0**grade - 1, k)[f"ndcg_{k}"],
        f"precision_{k}": precision_at_k(groups, score, grade == 2, k),
        f"topic_precision_{k}": precision_at_k(groups, score, grade >= 1, k),
    }
    for name, probability, outcome in (
        ("", topic_probability, grade >= 1),
        ("repeat_", repeat_probability, grade == 2),
    ):
        calibration = (
            binary_classification(outcome, probability)
            if probability is not None
            else {"brier": float("nan"), "ece": float("nan")}
        )
        report[f"{name}brier"] = calibration["brier"]
        report[f"{name}ece"] = calibration["ece"]
    report["lists"] = float(len(np.unique(groups)))
    report["candidates"] = float(len(frame))
    return report


@dataclass
class MethodScores:
    """One method's ranking score on a cut-off's candidates, and its probabilities of the
    question or its topic coming up and of the question coming back (None: not given)."""

    score: np.ndarray
    topic: np.ndarray | None = None
    repeat: np.ndarray | None = None

    def subset(self, rows: np.ndarray) -> MethodScores:
        """The scores of some candidates only (a boolean mask)."""
        return MethodScores(
            self.score[rows],
            None if self.topic is None else self.topic[rows],
            None if self.repeat is None else self.repeat[rows],
        )


def model_scores(predicted: pd.DataFrame) -> MethodScores:
    """A model's scores from its pyfunc output."""
    return MethodScores(
        predicted["score"].to_numpy(dtype=float),
        predicted["probability"].to_numpy(dtype=float),
        predicted["repeat_probability"].to_numpy(dtype=float),
    )


def predicted_scores(cutoff: CutOff, predict: Predict) -> MethodScores:
    """A model's scores on a cut-off's candidates, through its `predict` (on
    `question_history` rows, as logged)."""
    return model_scores(predict(cutoff.candidates[list(CANDIDATE_COLUMNS)]))


def baseline_scores(
    candidates: pd.DataFrame, reference: TextReference, embeddings: EmbeddingCache
) -> dict[str, MethodScores]:
    """The baselines on one cut-off. The frequency baselines rank by the same expected gain
    as the model, from their own estimates (share of papers asking the question and its
    topic, plain or weighted to recent papers); TF-IDF similarity to the subject's recent
    papers gives a score only."""
    vectors = embeddings.embed(candidates["text"].tolist())
    tfidf = reference.similarities(candidates, vectors)["tfidf_recent_similarity"]
    frequency = candidates["topic_paper_share"].to_numpy(), candidates["asked_share"].to_numpy()
    recency = (
        candidates["topic_paper_share_recent"].to_numpy(),
        candidates["recency_weighted_share"].to_numpy(),
    )
    return {
        "baseline_frequency": MethodScores(expected_gain(*frequency), *frequency),
        "baseline_recency_weighted": MethodScores(expected_gain(*recency), *recency),
        "baseline_tfidf_similarity": MethodScores(tfidf.to_numpy()),
    }


def evaluate_lists(
    frame: pd.DataFrame, scored: list[dict[str, MethodScores]], k: int
) -> dict[str, Any]:
    """`ranking_report` per method over the lists of `frame` (its rows are the cut-offs'
    candidates in the order of `scored`)."""

    def stacked(parts: list[np.ndarray | None]) -> np.ndarray | None:
        return None if parts[0] is None else np.concatenate([q for q in parts if q is not None])

    report = {}
    for method in scored[0]:
        runs = [s[method] for s in scored]
        report[method] = ranking_report(
            frame,
            np.concatenate([r.score for r in runs]),
            stacked([r.topic for r in runs]),
            stacked([r.repeat for r in runs]),
            k,
        )
    return report


def score_cutoff(data: RankerData, cutoff: CutOff, predict: Predict) -> dict[str, MethodScores]:
    """A model (its `predict` on `question_history` rows) and the baselines on a cut-off."""
    return {"model": predicted_scores(cutoff, predict)} | baseline_scores(
        cutoff.candidates, data.reference(cutoff, RECENT_YEARS), data.embeddings
    )


@dataclass
class HoldoutResult:
    """Every test year's candidates with their grades, and each method's scores on them."""

    frame: pd.DataFrame
    scored: list[dict[str, MethodScores]]


def holdout(
    data: RankerData, config: RankerConfig, p: QuestionRankerParams, seed: int
) -> HoldoutResult:
    """Rank each test year's candidates with a ranker fitted only on earlier cut-offs,
    through the same pyfunc serving loads (comparing texts with that cut-off's papers)."""
    frames, scored = [], []
    for cutoff in [c for c in data.cutoffs if c.year in data.test_years]:
        ranker = fit_ranker(data, config, data.before(cutoff.year), p.cv_folds, seed)
        model = QuestionRankerPyfunc(ranker, cutoff.questions, config.recent_years, data.embeddings)
        scored.append(score_cutoff(data, cutoff, partial(model.predict, None)))
        frames.append(lists_of(cutoff))
    return HoldoutResult(pd.concat(frames, ignore_index=True), scored)


def gate_holdout(data: RankerData) -> CutOff:
    """The hold-out of a registered version (`evaluate`, the promotion gate): the last
    labelled cut-off, graded by the last paper in the source, whose labels the logged model
    is never fitted on. The earlier test years of the rolling hold-out are not: the logged
    model is fitted on their labels."""
    return data.cutoffs[-1]


PROBE_SUBJECTS = 5  # subjects the behavioural check probes (one history rebuild for all)
NEVER_ASKED_SUFFIX = " Then answer it again for a case that no paper has set."


def repeated_every_year(
    frames: SourceFrames, subjects: list[int]
) -> tuple[SourceFrames, dict[int, pd.Series]]:
    """The behavioural check's edited source rows: in each subject, its question set in one
    paper only (the lowest id) is added to every other paper of the subject in `frames`
    (copies of its row with new ids). Returns the edited frames and each probed subject's
    repeated question (its `past_questions` row); a subject with no such question is
    skipped."""
    sat = past_questions(frames)
    papers_asking = sat.groupby(["subject_id", "candidate_key"])["paper_id"].transform("nunique")
    papers, questions = frames["past_papers"], frames["questions"]
    next_id = int(questions["id"].max()) + 1
    added, probes = [], {}
    for subject in subjects:
        once = sat[(sat["subject_id"] == subject) & (papers_asking == 1)]
        if once.empty:
            continue
        question = once.sort_values("id").iloc[0]
        others = papers.loc[
            (papers["subject_id"] == subject) & (papers["id"] != question["paper_id"]), "id"
        ].to_numpy()
        copies = questions[questions["id"] == question["id"]].iloc[[0] * len(others)].copy()
        copies["paper_id"] = others
        copies["id"] = np.arange(next_id, next_id + len(others))
        next_id += len(others)
        added.append(copies)
        probes[subject] = question
    edited = pd.concat([questions, *added], ignore_index=True)
    return SourceFrames(frames.tables | {"questions": edited}), probes


def judged_by_truth(data: RankerData, truth_dir: Path | None) -> CutOff | None:
    """The latest candidates (every paper as history) graded by the generator's held-back
    next paper; None without ground truth (on a real Supabase)."""
    path = truth_dir / "next_papers.parquet" if truth_dir else None
    if path is None or not path.exists():
        return None
    truth = pd.read_parquet(path, columns=["subject_id", "exam_year", "topic_id", "text"])
    latest = data.latest
    candidates = latest.candidates[latest.candidates["subject_id"].isin(truth["subject_id"])]
    candidates = candidates.reset_index(drop=True)
    candidates["grade"] = grades(candidates, truth)
    return CutOff(int(truth["exam_year"].max()) - 1, candidates, latest.questions)


def markdown_tables(title: str, report: dict[str, Any], k: int) -> str:
    """The report's method rows, and its comparison with the truth when there is one."""
    columns = [f"ndcg_{k}", f"precision_{k}", f"topic_precision_{k}", "brier", "ece"]
    columns += ["repeat_brier", "repeat_ece", "lists"]
    methods = {m: v for m, v in report.items() if m == "model" or m.startswith("baseline_")}
    markdown = reports.markdown_table(title, methods, columns)
    if "against_truth" in report:
        markdown += "\n" + reports.markdown_table(
            "against the generator's held-back next paper (every paper as history)",
            report["against_truth"],
            columns,
        )
    return markdown


def against_truth(
    data: RankerData, truth_dir: Path | None, predict: Predict, k: int
) -> dict[str, Any] | None:
    """A model and the baselines on the latest candidates graded by the generator's
    held-back next paper (`judged_by_truth`); None without ground truth."""
    judged = judged_by_truth(data, truth_dir)
    if judged is None:
        return None
    return evaluate_lists(lists_of(judged), [score_cutoff(data, judged, predict)], k)


def evaluate_version(
    data: RankerData, truth_dir: Path | None, predict: Predict, k: int
) -> tuple[dict[str, Any], str]:
    """One model next to the baselines: on the latest paper in the source (a fair test
    only of a version trained before that paper was sat), and against the generator's
    held-back next paper with every paper as history."""
    last = gate_holdout(data)
    report = evaluate_lists(lists_of(last), [score_cutoff(data, last, predict)], k)
    truth = against_truth(data, truth_dir, predict, k)
    if truth is not None:
        report["against_truth"] = truth
    title = (
        f"{CARD.name}: the paper of {last.year + 1} ranked from the papers up to {last.year} "
        "(out of time for a version fitted on this snapshot or an earlier one)"
    )
    return report, markdown_tables(title, report, k)


def rolling_holdout_report(
    data: RankerData, config: RankerConfig, p: QuestionRankerParams, seed: int
) -> tuple[HoldoutResult, dict[str, Any], list[int]]:
    """The rolling hold-out of a configuration next to the baselines (refitted per test
    year): its result, the pooled report with the report of each year
    (`holdout_by_year`), and the years of the papers ranked."""
    k = p.top_k
    result = holdout(data, config, p, seed)
    report: dict[str, Any] = evaluate_lists(result.frame, result.scored, k)
    years = sorted(result.frame["year"].unique())
    report["holdout_by_year"] = {
        str(year): evaluate_lists(
            result.frame[result.frame["year"] == year].reset_index(drop=True), [scored], k
        )
        for year, scored in zip(years, result.scored, strict=True)
    }
    return result, report, years


def subject_slices(data: RankerData, predict: Predict, k: int) -> dict[str, dict[str, float]]:
    """`ranking_report` of the model per subject ("subject <id>") on the rows `evaluate`
    scores (`gate_holdout`: the last paper in the source, ranked from the papers before
    it), so each slice is one subject's list; `n` is the number of candidates ranked.

    Left out, as they make no sense here:
    - the student slices (new vs long-standing, low vs high recent activity): past papers
      are catalogue data, the same for every student; no student's rows enter the
      candidates, the features or the labels, so there is nothing to split by student.
    - per hold-out year: the gate scores a registered version, which is fitted on the
      labels of every cut-off but the last (`finish`), so the earlier years of the
      training's rolling hold-out are in its training data (a slice there would judge
      fit, not generalisation), and the one year out of time for it is the main
      metric itself.
    """
    last = gate_holdout(data)
    frame = lists_of(last)
    scores = predicted_scores(last, predict)
    slices = {}
    for subject in sorted(frame["subject_id"].unique()):
        rows = (frame["subject_id"] == subject).to_numpy()
        report = evaluate_lists(frame[rows], [{"model": scores.subset(rows)}], k)
        slices[f"subject {int(subject)}"] = report["model"] | {"n": float(rows.sum())}
    return slices


def repeated_above_never_asked(
    snapshot_dir: Path, as_of: datetime, data: RankerData, predict: Predict
) -> dict[str, tuple[bool, str]]:
    """The behavioural test of the training issue: a question repeated every year ranks
    above one never asked. In each of the first `PROBE_SUBJECTS` subjects of the latest
    history, a question set once is added to every other past paper of the snapshot's
    source rows (`repeated_every_year`), the history is rebuilt at `as_of` by
    `features.questions.question_history` (the builder serving uses), and the subject's
    rows are ranked by `predict` as serving sends them, with a text never asked on the
    same topic (its row from `features.questions.rows_for_texts`, as serving builds a
    given text's: the topic's history, none of its own). The never-asked text is the
    repeated one with a clause added, so the two differ in their own history, not in
    topic, and hardly in wording. Passes when, in every probed subject, the repeated question has
    the better rank, a higher score and a higher P(question comes back)."""
    name = "a question repeated every year ranks above one never asked"
    frames = from_snapshot(snapshot_dir, TABLES).as_of(as_of)
    subjects = sorted(int(s) for s in data.latest.candidates["subject_id"].unique())
    edited, probes = repeated_every_year(frames, subjects[:PROBE_SUBJECTS])
    if not probes:
        return {name: (False, "no subject has a question set in one paper only to repeat")}
    history = question_history(edited, as_of)
    passed, details = 0, []
    for subject, question in probes.items():
        rows = history[history["subject_id"] == subject].reset_index(drop=True)
        never = rows_for_texts(
            rows, [(str(question["text"]) + NEVER_ASKED_SUFFIX, int(question["topic_id"]))]
        )
        request = pd.concat([rows, never], ignore_index=True)
        predicted = predict(request)
        mine = int(np.flatnonzero(request["candidate_key"] == question["candidate_key"])[0])
        repeated, new = predicted.iloc[mine], predicted.iloc[-1]
        ok = (
            int(repeated["rank"]) < int(new["rank"])
            and float(repeated["score"]) > float(new["score"])
            and float(repeated["repeat_probability"]) > float(new["repeat_probability"])
        )
        passed += ok
        details.append(
            f"subject {subject}: rank {int(repeated['rank'])} vs {int(new['rank'])} of "
            f"{len(request)}, P(comes back) {float(repeated['repeat_probability']):.3f} vs "
            f"{float(new['repeat_probability']):.3f}"
        )
    verdict = f"{passed}/{len(probes)} subjects (repeated vs never asked): "
    return {name: (passed == len(probes), verdict + "; ".join(details))}


def request_samples(data: RankerData, count: int) -> list[pd.DataFrame]:
    """Single-subject requests as serving sends them (`rank_questions`: one subject's
    `question_history` rows, every paper as history), `count` of them cycling over the
    subjects of the latest history."""
    rows = data.latest.candidates[list(CANDIDATE_COLUMNS)]
    subjects = sorted(rows["subject_id"].unique())
    if not subjects:
        return []
    return [
        rows[rows["subject_id"] == subjects[i % len(subjects)]].reset_index(drop=True)
        for i in range(count)
    ]


def holdout_plots(
    folder: Path, result: HoldoutResult, by_year: dict[str, dict[str, Any]], k: int
) -> list[Path]:
    """NDCG@k per test year of every method, and the reliability of the model's two
    probabilities on the hold-out."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    years = list(by_year)
    methods = list(by_year[years[0]])
    width = 0.8 / len(methods)
    for index, method in enumerate(methods):
        axes[0].bar(
            np.arange(len(years)) + index * width,
            [by_year[y][method][f"ndcg_{k}"] for y in years],
            width,
            label=method.removeprefix("baseline_"),
        )
    axes[0].set_xticks(np.arange(len(years)) + 0.4 - width / 2, years)
    axes[0].set(xlabel="test year", ylabel=f"NDCG@{k}", title="Rolling hold-out")
    axes[0].legend(fontsize=8)
    grade = result.frame["grade"].to_numpy()
    for label, part, outcome in (
        ("question or topic", "topic", grade >= 1),
        ("question", "repeat", grade == 2),
    ):
        probability = np.concatenate([getattr(s["model"], part) for s in result.scored])
        observed, predicted = calibration_curve(outcome, probability, n_bins=8, strategy="quantile")
        axes[1].plot(predicted, observed, marker="o", label=label)
    axes[1].plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes[1].set(xlabel="predicted probability", ylabel="observed frequency", title="Calibration")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    path = folder / "ranking.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]
