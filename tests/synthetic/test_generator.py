"""`prepiq seed`: deterministic, within the contract, all-or-nothing, and showing the
relations its learning model claims (statistical checks on fixed seeds)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sqlalchemy import Engine, select, text

from core.exceptions import ConfigError, SourceNotEmptyError
from features.schema import CONTRACT_TABLES, Base
from synthetic.curriculum import build_curriculum
from synthetic.generator import seed_source, source_user_count
from tests.conftest import END_DATE, migrated_engine


def _normalise(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def table_rows(engine: Engine, name: str) -> list[tuple[Any, ...]]:
    table = Base.metadata.tables[name]
    with engine.connect() as conn:
        rows = conn.execute(select(table)).all()
    return sorted((tuple(_normalise(v) for v in row) for row in rows), key=repr)


def small_seed(url: str, folder: Path, seed: int = 11, students: int = 60) -> Engine:
    engine = migrated_engine(url)
    seed_source(engine, students=students, seed=seed, days=90, end_date=END_DATE, truth_dir=folder)
    return engine


def test_same_seed_same_rows_on_sqlite_and_postgres(tmp_path: Path, pg_url: str) -> None:
    first = small_seed(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "truth_a")
    second = small_seed(f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "truth_b")
    on_postgres = small_seed(pg_url, tmp_path / "truth_pg")
    for name in CONTRACT_TABLES:
        rows = table_rows(first, name)
        assert rows == table_rows(second, name), f"{name} differs between two runs"
        assert rows == table_rows(on_postgres, name), f"{name} differs on PostgreSQL"
    for truth in ("mastery", "students", "next_papers"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "truth_a" / f"{truth}.parquet"),
            pd.read_parquet(tmp_path / "truth_b" / f"{truth}.parquet"),
        )


def test_another_seed_gives_other_rows(tmp_path: Path) -> None:
    first = small_seed(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "ta", seed=1)
    other = small_seed(f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "tb", seed=2)
    assert table_rows(first, "test_answers") != table_rows(other, "test_answers")


def test_seeded_rows_respect_the_contract(seeded_sqlite: tuple[Engine, Path]) -> None:
    engine, _ = seeded_sqlite
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
        counts = {
            t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in CONTRACT_TABLES
        }
        answer_times = conn.execute(
            text("SELECT MIN(time_taken_seconds), MAX(time_taken_seconds) FROM test_answers")
        ).one()
        stored_scores = pd.read_sql(
            "SELECT t.id, t.score_percent, t.question_count, COUNT(a.id) AS answered, "
            "AVG(a.is_correct) * 100 AS recomputed FROM tests t JOIN test_answers a "
            "ON a.test_id = t.id GROUP BY t.id",
            conn,
        )
        last_activity = conn.execute(
            text("SELECT MAX(activity_date) FROM study_activity")
        ).scalar_one()
    assert counts["model_predictions"] == 0  # written by serving, never seeded
    for name, count in counts.items():
        if name != "model_predictions":
            assert count > 0, f"{name} is empty"
    assert counts["users"] == 300
    assert 0 < answer_times[0] <= answer_times[1] <= 900
    assert (stored_scores.question_count == stored_scores.answered).all()
    assert np.allclose(stored_scores.score_percent, stored_scores.recomputed, atol=0.01)
    assert str(last_activity) <= END_DATE.isoformat()


def test_ground_truth_is_kept_apart_from_the_source(seeded_sqlite: tuple[Engine, Path]) -> None:
    engine, truth = seeded_sqlite
    manifest = json.loads((truth / "manifest.json").read_text())
    assert manifest["students"] == 300
    assert {"mastery.parquet", "students.parquet", "next_papers.parquet", "questions.parquet"} <= {
        p.name for p in truth.iterdir()
    }
    next_papers = pd.read_parquet(truth / "next_papers.parquet")
    with engine.connect() as conn:
        years = conn.execute(text("SELECT MIN(exam_year), MAX(exam_year) FROM past_papers")).one()
    assert years[1] - years[0] + 1 >= 10
    assert (next_papers.exam_year == years[1] + 1).all()  # the held-back year is not in the source


def test_correctness_falls_with_difficulty(seeded_sqlite: tuple[Engine, Path]) -> None:
    engine, _ = seeded_sqlite
    with engine.connect() as conn:
        by_difficulty = pd.read_sql(
            "SELECT q.difficulty, AVG(a.is_correct) AS accuracy, COUNT(*) AS n FROM test_answers a "
            "JOIN questions q ON q.id = a.question_id GROUP BY q.difficulty ORDER BY q.difficulty",
            conn,
        )
    assert list(by_difficulty.difficulty) == [1, 2, 3, 4, 5]
    assert (np.diff(by_difficulty.accuracy) < 0).all(), by_difficulty
    assert by_difficulty.accuracy.iloc[0] - by_difficulty.accuracy.iloc[-1] > 0.2


def test_mastery_grows_with_study(seeded_sqlite: tuple[Engine, Path]) -> None:
    engine, truth = seeded_sqlite
    mastery = pd.read_parquet(truth / "mastery.parquet")
    first, last = mastery.as_of.min(), mastery.as_of.max()
    theta = mastery.pivot_table(index=["user_id", "topic_id"], columns="as_of", values="theta")
    growth = (theta[last] - theta[first]).dropna().groupby("user_id").mean()
    with engine.connect() as conn:
        minutes = pd.read_sql(
            "SELECT user_id, SUM(study_minutes) AS minutes FROM study_activity "
            "WHERE activity_date > :first GROUP BY user_id",
            conn,
            params={"first": str(first)},
        ).set_index("user_id")["minutes"]
    joined = pd.concat([growth.rename("growth"), minutes], axis=1).fillna({"minutes": 0}).dropna()
    rho = stats.spearmanr(joined.minutes, joined.growth).statistic
    assert rho > 0.4, f"mastery growth vs study minutes: spearman {rho:.2f}"
    # Students who did not study lose a little (forgetting), those who did gain.
    idle = joined[joined.minutes == 0].growth
    busy = joined[joined.minutes > joined.minutes.median()].growth
    assert busy.mean() > 0
    assert idle.empty or idle.mean() <= 0


def test_completion_never_falls_and_follows_study(seeded_sqlite: tuple[Engine, Path]) -> None:
    engine, _ = seeded_sqlite
    with engine.connect() as conn:
        progress = pd.read_sql(
            "SELECT user_id, recorded_on, completion_percent FROM user_progress ORDER BY user_id, recorded_on",
            conn,
        )
    steps = progress.groupby("user_id").completion_percent.diff().dropna()
    assert (steps >= -1e-9).all()
    assert progress.completion_percent.between(0, 100).all()


def test_papers_follow_their_topic_pattern() -> None:
    cur = build_curriculum(np.random.default_rng(3), last_exam_year=2026)
    counts = pd.crosstab(cur.question_topic, cur.paper_year[cur.question_paper])
    counts = counts.reindex(range(cur.n_topics), fill_value=0)
    years = counts.columns.to_numpy()
    # Cyclic topics come up more in their on-years than in their off-years.
    on_share: list[float] = []
    off_share: list[float] = []
    for topic in np.flatnonzero(cur.topic_period > 1):
        on = (years - cur.topic_phase[topic]) % cur.topic_period[topic] == 0
        on_share.append(counts.loc[topic, on].to_numpy().mean())
        off_share.append(counts.loc[topic, ~on].to_numpy().mean())
    assert np.mean(on_share) > 2 * np.mean(off_share)
    # Over all years, a topic's frequency follows its syllabus weight.
    rho = stats.spearmanr(cur.topic_weight, counts.sum(axis=1)).statistic
    assert rho > 0.5
    # Some questions come back as classics, most are new.
    repeated = (cur.question_classic >= 0).mean()
    assert 0.15 < repeated < 0.6


def test_a_source_with_users_is_refused_and_reset_replaces_it(tmp_path: Path) -> None:
    engine = small_seed(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "truth", students=20)
    with pytest.raises(SourceNotEmptyError, match="already holds 20 users"):
        seed_source(
            engine, students=5, seed=1, days=90, end_date=END_DATE, truth_dir=tmp_path / "t2"
        )
    seed_source(
        engine,
        students=5,
        seed=1,
        days=90,
        end_date=END_DATE,
        truth_dir=tmp_path / "t2",
        reset=True,
    )
    assert source_user_count(engine) == 5


def test_a_failure_half_way_leaves_the_source_untouched(any_url: str, tmp_path: Path) -> None:
    engine = migrated_engine(any_url)

    def crash_after_first_batch(done: int, total: int) -> None:
        raise RuntimeError("injected failure after a batch")

    with pytest.raises(RuntimeError, match="injected"):
        seed_source(
            engine,
            students=1500,
            seed=3,
            days=60,
            end_date=END_DATE,
            truth_dir=tmp_path / "truth",
            progress=crash_after_first_batch,
        )
    with engine.connect() as conn:
        for name in CONTRACT_TABLES:
            assert conn.execute(text(f"SELECT COUNT(*) FROM {name}")).scalar_one() == 0, name
    assert not (tmp_path / "truth").exists()
    assert not (tmp_path / "truth.partial").exists()


def test_bad_arguments_name_the_parameter(tmp_path: Path) -> None:
    engine = migrated_engine(f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(ConfigError, match="--students"):
        seed_source(engine, students=0, seed=1, truth_dir=tmp_path / "t")
    with pytest.raises(ConfigError, match="--days"):
        seed_source(engine, students=5, seed=1, days=5, truth_dir=tmp_path / "t")


def test_a_failed_reset_keeps_the_old_rows(tmp_path: Path) -> None:
    engine = small_seed(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "truth", students=20)
    before = table_rows(engine, "test_answers")

    def crash(done: int, total: int) -> None:
        raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError):
        seed_source(
            engine,
            students=5,
            seed=9,
            days=90,
            end_date=END_DATE,
            truth_dir=tmp_path / "truth",
            reset=True,
            progress=crash,
        )
    assert table_rows(engine, "test_answers") == before
    assert (tmp_path / "truth" / "manifest.json").exists()
