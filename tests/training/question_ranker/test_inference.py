"""The logged pyfunc ranks builder rows, pickles without the encoder's weights, and its
module loads nothing of training."""

from __future__ import annotations

import pickle
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pytest

import training.question_ranker
from features.frames import SourceFrames
from features.questions import CANDIDATE_COLUMNS, NUMERIC_COLUMNS, normalise_text, question_history
from tests.import_probe import forbidden_among, loaded_by
from tests.training.question_ranker.conftest import AS_OF
from training.model_spec import Outcome
from training.question_ranker import inference
from training.question_ranker.data import RankerData


def test_the_pyfunc_ranks_builder_rows_and_carries_no_weights(
    outcome: tuple[Outcome, float], frames: SourceFrames, data: RankerData
) -> None:
    model = outcome[0].python_model
    rows = question_history(frames, AS_OF)
    predicted = model.predict(None, rows)
    assert list(predicted.columns) == ["probability", "repeat_probability", "score", "rank"]
    assert len(predicted) == len(rows)
    assert predicted["probability"].between(0, 1).all()
    assert (predicted["probability"] >= predicted["repeat_probability"]).all()
    for _, ranks in predicted.groupby(rows["subject_id"].to_numpy())["rank"]:
        assert sorted(ranks) == list(range(1, len(ranks) + 1))
    # Pickled (as MLflow does) it keeps the fitted parts and the text cache, not the encoder.
    restored: Any = pickle.loads(pickle.dumps(model))
    assert restored.embeddings._encoder is None
    assert len(pickle.dumps(model)) < 20_000_000  # the MiniLM weights alone are ~90 MB
    pd.testing.assert_frame_equal(restored.predict(None, rows), predicted)
    # A history cut at an earlier year is compared with the papers up to that year only.
    earlier = data.cutoffs[-1]
    restored.predict(None, earlier.candidates[list(CANDIDATE_COLUMNS)])
    assert set(restored.references) == {earlier.year, earlier.year + 1}
    # Twenty known questions are ranked from the cache: no text goes to the encoder (its
    # speed is measured by benchmarks/serving.py and the gate's latency check, not here).
    twenty = rows[rows["subject_id"] == rows["subject_id"].iloc[0]].head(20)
    ranked = restored.predict(None, twenty)
    assert sorted(ranked["rank"]) == list(range(1, 21))
    assert restored.embeddings._encoder is None


def _history(years: range, repeated: str, fillers: int) -> SourceFrames:
    """One subject whose every paper asks `repeated`, plus new questions each year."""
    papers: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    for number, year in enumerate(years, start=1):
        papers.append(
            {"id": number, "subject_id": 1, "exam_year": year, "exam_date": date(year, 6, 10)}
        )
        texts = [repeated] + [
            f"Describe case {year}-{i} of the roots of a quadratic equation."
            for i in range(fillers)
        ]
        for text in texts:
            questions.append(
                {"id": 10**6 + len(questions), "paper_id": number, "topic_id": 3, "text": text}
                | {"difficulty": 3, "marks": 3}
            )
    return SourceFrames(
        {
            "past_papers": pd.DataFrame(papers),
            "questions": pd.DataFrame(questions),
            "topics": pd.DataFrame({"id": [3], "syllabus_weight": [0.08]}),
            "question_ratings": pd.DataFrame(
                {
                    "question_id": pd.Series(dtype="int64"),
                    "difficulty_rating": pd.Series(dtype="float64"),
                    "created_at": pd.Series(dtype="datetime64[us, UTC]"),
                }
            ),
        }
    )


def test_a_question_repeated_every_year_ranks_above_one_never_asked(
    outcome: tuple[Outcome, float],
) -> None:
    """Behaviour (issue #4): in a history where one question is set every year and others
    once, the repeated one ranks first, above a question new this year and one never asked
    (history unknown: zeros)."""
    repeated = "Find the roots of the quadratic equation by completing the square."
    history = question_history(_history(range(2015, 2027), repeated, fillers=5), AS_OF)
    never_asked = history.iloc[[0]].copy()
    never_asked["text"] = "Sketch the graph of a quadratic equation and label its vertex."
    never_asked["candidate_key"] = normalise_text(never_asked["text"].iloc[0])
    never_asked[list(NUMERIC_COLUMNS)] = 0.0
    rows = pd.concat([history, never_asked], ignore_index=True)
    predicted = outcome[0].python_model.predict(None, rows)
    keys = rows["candidate_key"].tolist()
    top = predicted.loc[keys.index(normalise_text(repeated))]
    assert top["rank"] == 1
    newest = rows.index[rows["text"].str.contains("2026-0")][0]
    for other in (newest, len(rows) - 1):
        assert top["score"] > predicted.loc[other, "score"]
        assert top["repeat_probability"] > predicted.loc[other, "repeat_probability"]
        assert predicted.loc[other, "rank"] > 1
    assert np.isfinite(predicted["score"]).all()


def test_the_inference_module_loads_nothing_of_training() -> None:
    """Serving imports `inference` alone: in a fresh interpreter, it pulls in neither
    Optuna, Lightning nor any training module (nor the package's training modules)."""
    loaded = loaded_by("training.question_ranker.inference")
    assert forbidden_among(loaded, "training.question_ranker") == []


def test_a_pickle_of_the_flat_module_still_loads() -> None:
    """A version logged before the split names its classes `training.question_ranker.<Name>`."""
    for name in ("QuestionRankerPyfunc", "FittedRanker"):
        found = pickle.loads(f"ctraining.question_ranker\n{name}\n.".encode())
        assert found is getattr(inference, name)
    with pytest.raises(AttributeError):
        training.question_ranker.make_dataset  # noqa: B018  not forwarded: no pickle names it
