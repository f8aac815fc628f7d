"""The model of learning the synthetic students follow, simulated day by day for a batch.

Each student has a latent mastery per topic (IRT ability): a general ability, a head start
shared with similar students (their archetype), a few topics that are truly weak for them,
and learning that grows with practice and fades without it. Study habits have a weekly
rhythm, a motivation that drifts, breaks, drop-outs and a push as the exam nears. Answers
follow a 3-parameter IRT curve; time taken follows mastery and difficulty; wrong answers
often pick the same distractor (a misconception).

All draws come from the batch's own generator, vectorised over students, so a batch of any
size costs about the same per student.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from synthetic.curriculum import N_CLUSTERS, Curriculum

LEARNING_TIME_MINUTES = 600.0  # study that closes 63% of the gap to a topic's ceiling
FORGETTING_PER_DAY = 0.003  # share of learning lost per day once a topic is a week unpractised
GUESS = 0.25  # four options
IRT_SCALE = 1.7
WEAK_ACCURACY = 0.5  # a topic is truly weak when expected accuracy on it is below this
GAIN_STUDY_MINUTES = 300.0  # the study the ground-truth gain per topic assumes
QUIZ_QUESTIONS = 10
MOCK_QUESTIONS = 12
US_PER_DAY = 86_400_000_000
US_PER_SECOND = 1_000_000


@dataclass(frozen=True)
class Window:
    """The app's observed history (rows written) and the hidden future (truth only)."""

    start: date
    days: int
    future_days: int = 90
    snapshot_every: int = 30

    @property
    def end(self) -> date:
        return self.start + timedelta(days=self.days - 1)

    def day_us(self, day: int | np.ndarray) -> np.ndarray:
        """Midnight UTC of `day` (index from the window start) in epoch microseconds."""
        base = np.datetime64(self.start, "us").astype(np.int64)
        return base + np.asarray(day, dtype=np.int64) * US_PER_DAY


@dataclass
class Rows:
    """Column arrays of one table for one batch."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    _parts: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, **values: np.ndarray) -> None:
        for key, value in values.items():
            self._parts.setdefault(key, []).append(np.asarray(value))

    def finish(self) -> Rows:
        self.columns = {k: np.concatenate(v) for k, v in self._parts.items()}
        self._parts = {}
        return self

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


@dataclass
class BatchResult:
    """What one batch of students produced: source rows and ground truth."""

    tables: dict[str, Rows]
    truth: dict[str, Rows]


def _expected_accuracy(theta: np.ndarray, bank_a: np.ndarray, bank_b: np.ndarray) -> np.ndarray:
    """Mean probability of a right answer over each topic's questions: [B, T]."""
    z = IRT_SCALE * bank_a[None, :, :] * (theta[:, :, None] - bank_b[None, :, :])
    p = GUESS + (1 - GUESS) / (1 + np.exp(-z))
    valid = ~np.isnan(bank_b)
    return np.where(valid[None], p, 0.0).sum(axis=2) / np.maximum(valid.sum(axis=1), 1)[None, :]


def _gumbel_pick(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One column per row, drawn with probability proportional to `weights` (-1 if none)."""
    with np.errstate(divide="ignore"):
        keys = np.log(weights) + rng.gumbel(size=weights.shape)
    picked = keys.argmax(axis=1)
    return np.where(np.isfinite(keys.max(axis=1)), picked, -1)


def _sample_rows(
    rng: np.random.Generator, bank: np.ndarray, counts: np.ndarray, rows: np.ndarray, k: int
) -> np.ndarray:
    """Up to k distinct entries from each selected bank row, -1 padded: [len(rows), k]."""
    keys = rng.random((len(rows), bank.shape[1]))
    keys[bank[rows] < 0] = np.inf
    order = np.argsort(keys, axis=1)[:, :k]
    picked = np.take_along_axis(bank[rows], order, axis=1)
    picked[np.arange(k)[None, :] >= counts[rows][:, None]] = -1
    return picked


class BatchSimulator:
    """Simulates `size` students over the window; call `run()` once."""

    def __init__(
        self, curriculum: Curriculum, rng: np.random.Generator, size: int, window: Window
    ) -> None:
        self.cur = curriculum
        self.rng = rng
        self.size = size
        self.window = window
        self.topic_bank, self.topic_bank_count = curriculum.topic_bank()
        self.paper_bank, self.paper_bank_count = curriculum.paper_bank()
        safe = np.maximum(self.topic_bank, 0)
        self.bank_a = np.where(self.topic_bank >= 0, curriculum.question_a[safe], np.nan)
        self.bank_b = np.where(self.topic_bank >= 0, curriculum.question_b[safe], np.nan)
        n_subjects = len(curriculum.subject_codes)
        self.subject_papers = [
            np.flatnonzero(curriculum.paper_subject == s) for s in range(n_subjects)
        ]
        self._draw_students()

    # -- who the students are -------------------------------------------------------
    def _draw_students(self) -> None:
        rng, cur, n = self.rng, self.cur, self.size
        n_subjects, n_topics = len(cur.subject_codes), cur.n_topics
        n_enrolled = rng.choice([1, 2, 3], size=n, p=[0.45, 0.40, 0.15])
        order = np.argsort(rng.random((n, n_subjects)), axis=1)
        self.enrolled_subjects = np.zeros((n, n_subjects), dtype=bool)
        for k in range(3):
            take = n_enrolled > k
            self.enrolled_subjects[np.flatnonzero(take), order[take, k]] = True
        self.enrolled = self.enrolled_subjects[:, cur.topic_subject]  # [B, T]
        self.n_subjects = n_enrolled

        self.cluster = rng.integers(0, N_CLUSTERS, size=n)
        self.ability = rng.normal(0.0, 0.6, size=n)
        affinity = cur.cluster_affinity[self.cluster]
        weak_probability = 1 / (1 + np.exp(-(np.log(0.22 / 0.78) - 1.5 * affinity)))
        truly_weak = rng.random((n, n_topics)) < weak_probability
        offset = np.where(
            truly_weak,
            -rng.normal(2.6, 0.3, size=(n, n_topics)),
            rng.normal(0.0, 0.25, size=(n, n_topics)),
        )
        self.theta0 = 0.3 + self.ability[:, None] + affinity + offset
        self.ceiling_gain = (
            1.4 * cur.cluster_learnability[self.cluster] * rng.lognormal(0, 0.2, (n, n_topics))
        )

        # Habits.
        self.join_day = np.where(
            rng.random(n) < 0.6, 0, rng.integers(0, int(self.window.days * 0.85), size=n)
        )
        self.base_minutes = rng.lognormal(np.log(45), 0.45, size=n)
        self.activity_rate = rng.beta(4, 3, size=n)
        self.test_rate = rng.beta(2, 4, size=n)
        self.weekend_factor = rng.uniform(0.3, 1.5, size=n)
        self.motivation = rng.normal(0.0, 0.3, size=n)
        self.motivation_drift = rng.normal(0.0, 0.005, size=n)
        self.aware = rng.random(n) < 0.5  # works on its weak topics when it notices them
        self.study_hour = rng.uniform(7, 21, size=n)
        self.exam_day = self.window.days + rng.integers(30, 300, size=n)
        self.misconception = rng.integers(1, 4, size=len(cur.question_b))  # per question

        # State.
        self.learned = np.zeros((n, n_topics))
        self.coverage = np.zeros((n, n_topics))
        prior = rng.uniform(0, 0.25, size=n)  # share of each syllabus known from school
        positions = cur.topic_position / np.bincount(cur.topic_subject)[cur.topic_subject]
        known = self.enrolled & (positions[None, :] < prior[:, None])
        self.coverage[known] = 1.0
        self.learned[known] = self.ceiling_gain[known] * 0.5
        self.last_practice = np.full((n, n_topics), -1_000)
        self.dropped = np.zeros(n, dtype=bool)
        self.return_day = np.full(n, np.iinfo(np.int64).max)
        self.break_until = np.zeros(n, dtype=np.int64)
        self.streak = np.zeros(n, dtype=np.int64)
        self.attempts = np.zeros((n, n_topics))
        self.correct = np.zeros((n, n_topics))
        self.time_sum = np.zeros((n, n_topics))
        self.last_attempt_us = np.zeros((n, n_topics), dtype=np.int64)

    # -- dynamics ---------------------------------------------------------------------
    def _learn(self, rows: np.ndarray, topics: np.ndarray, minutes: np.ndarray, day: int) -> None:
        gap = self.ceiling_gain[rows, topics] - self.learned[rows, topics]
        np.add.at(
            self.learned, (rows, topics), gap * (1 - np.exp(-minutes / LEARNING_TIME_MINUTES))
        )
        self.last_practice[rows, topics] = day

    def theta(self) -> np.ndarray:
        return self.theta0 + self.learned

    def completion(self) -> np.ndarray:
        weights = self.cur.topic_weight[None, :] * self.enrolled
        covered = (weights * np.minimum(self.coverage, 1.0)).sum(axis=1)
        return np.clip(100.0 * covered / self.n_subjects, 0.0, 100.0)

    def run(self) -> BatchResult:
        tables = {
            name: Rows() for name in ("study_activity", "user_progress", "tests", "test_answers")
        }
        truth = {"mastery": Rows(), "completion": Rows()}
        window = self.window
        completion_at: dict[int, np.ndarray] = {}
        horizons = (0, 30, 60, 90)
        for day in range(window.days + window.future_days):
            observed = day < window.days
            active, minutes, subject = self._study_day(day)
            tests = self._tests(day, active, subject)
            self.streak = np.where(active, self.streak + 1, 0)
            if observed:
                self._record_day(tables, day, active, minutes, tests)
                last = day == window.days - 1
                if (day + 1) % window.snapshot_every == 0 or last:
                    self._record_mastery(truth["mastery"], day)
                if last:
                    self.performance_at_end = self.topic_performance()
            offset = day - (window.days - 1)
            if offset in horizons:
                completion_at[offset] = self.completion()
        truth["completion"].add(
            student=np.arange(self.size),
            **{f"completion_plus_{h}d": completion_at[h] for h in horizons},
            dropped_out=self.dropped.copy(),
        )
        return BatchResult(
            tables={k: v.finish() for k, v in tables.items()},
            truth={k: v.finish() for k, v in truth.items()},
        )

    def _study_day(self, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng, n = self.rng, self.size
        weekday = (self.window.start + timedelta(days=day)).weekday()
        weekend = weekday >= 5
        joined = day >= self.join_day

        self.motivation = np.clip(
            self.motivation + self.motivation_drift + rng.normal(0, 0.04, n), -2.5, 1.5
        )
        returning = self.dropped & (day >= self.return_day)
        self.dropped &= ~returning
        self.motivation[returning] = 0.0
        hazard = 0.0012 * np.exp(-1.2 * self.motivation)
        drop = joined & ~self.dropped & (rng.random(n) < hazard)
        self.dropped |= drop
        comes_back = drop & (rng.random(n) < 0.25)
        self.return_day = np.where(
            comes_back,
            day + rng.integers(20, 60, n),
            np.where(drop, np.iinfo(np.int64).max, self.return_day),
        )
        start_break = (rng.random(n) < 0.008) & (day >= self.break_until)
        self.break_until = np.where(start_break, day + rng.integers(3, 15, n), self.break_until)

        day_factor = np.where(weekend, self.weekend_factor, 1.0)
        p_active = np.clip(
            self.activity_rate * np.exp(0.6 * self.motivation) * np.sqrt(day_factor), 0, 0.97
        )
        active = joined & ~self.dropped & (day >= self.break_until) & (rng.random(n) < p_active)
        days_to_exam = np.maximum(self.exam_day - day, 0)
        exam_push = 1 + 0.8 * np.exp(-days_to_exam / 45)
        minutes = self.base_minutes * np.exp(0.7 * self.motivation) * day_factor * exam_push
        minutes = np.clip(minutes * rng.lognormal(0, 0.35, n), 5, 360).round()
        minutes = np.where(active, minutes, 0.0)

        # Study the day's subject: most time on the next syllabus topic, the rest on review.
        subject = _gumbel_pick(rng, self.enrolled_subjects.astype(float))
        in_subject = self.cur.topic_subject[None, :] == subject[:, None]
        incomplete = in_subject & (self.coverage < 1.0)
        has_next = incomplete.any(axis=1)
        current = np.where(has_next, incomplete.argmax(axis=1), -1)
        review = self._review_topic(in_subject & (self.coverage > 0))
        main_share = np.where(has_next, np.where(review >= 0, 0.75, 1.0), 0.0)
        rows = np.flatnonzero(active & has_next)
        main_minutes = (minutes * main_share)[rows]
        self.coverage[rows, current[rows]] += (
            main_minutes / self.cur.topic_required_minutes[current[rows]]
        )
        self._learn(rows, current[rows], main_minutes, day)
        rows = np.flatnonzero(active & (review >= 0))
        self._learn(rows, review[rows], (minutes * (1 - main_share))[rows], day)

        stale = self.last_practice < day - 7
        self.learned = np.where(stale, self.learned * (1 - FORGETTING_PER_DAY), self.learned)
        self.current_topic = current
        return active, minutes, subject

    def _review_topic(
        self, candidates: np.ndarray, students: np.ndarray | None = None
    ) -> np.ndarray:
        """A covered topic to revise; students who track their results pick weak ones."""
        rows = np.arange(self.size) if students is None else students
        attempts = self.attempts[rows]
        accuracy = np.where(attempts >= 3, self.correct[rows] / np.maximum(attempts, 1), 0.7)
        weakness = np.where(self.aware[rows][:, None], np.exp(-6 * accuracy), 1.0)
        return _gumbel_pick(self.rng, np.where(candidates, weakness, 0.0))

    def _tests(self, day: int, active: np.ndarray, subject: np.ndarray) -> dict[str, np.ndarray]:
        rng, cur = self.rng, self.cur
        days_to_exam = np.maximum(self.exam_day - day, 0)
        p_test = np.clip(self.test_rate * (1 + 0.6 * np.exp(-days_to_exam / 45)), 0, 0.9)
        takers = np.flatnonzero(active & (rng.random(self.size) < p_test))
        n = len(takers)
        is_quiz = rng.random(n) < 0.65
        taker_subject = subject[takers]

        # Quiz topic: today's topic, a weak topic (if the student watches for them) or any
        # topic studied so far.
        in_subject = cur.topic_subject[None, :] == taker_subject[:, None]
        studied = in_subject & (self.coverage[takers] > 0.2)
        weak_pick = self._review_topic(studied, takers)
        any_pick = _gumbel_pick(rng, np.where(studied, self.coverage[takers], 0.0))
        fallback = _gumbel_pick(rng, in_subject.astype(float))
        choice = rng.random(n)
        topic = np.where(choice < 0.45, self.current_topic[takers], -1)
        topic = np.where((topic < 0) & self.aware[takers] & (choice < 0.75), weak_pick, topic)
        topic = np.where(topic < 0, any_pick, topic)
        topic = np.where(topic < 0, fallback, topic)

        paper = np.full(n, -1)
        for s, papers in enumerate(self.subject_papers):
            rows = np.flatnonzero(~is_quiz & (taker_subject == s))
            paper[rows] = papers[rng.integers(0, len(papers), len(rows))]

        questions = np.full((n, max(QUIZ_QUESTIONS, MOCK_QUESTIONS)), -1)
        quiz_rows = np.flatnonzero(is_quiz)
        questions[quiz_rows, :QUIZ_QUESTIONS] = _sample_rows(
            rng, self.topic_bank, self.topic_bank_count, topic[quiz_rows], QUIZ_QUESTIONS
        )
        mock_rows = np.flatnonzero(~is_quiz)
        questions[mock_rows, :MOCK_QUESTIONS] = _sample_rows(
            rng, self.paper_bank, self.paper_bank_count, paper[mock_rows], MOCK_QUESTIONS
        )
        test_index, slot = np.nonzero(questions >= 0)
        q = questions[test_index, slot]
        student = takers[test_index]
        q_topic = cur.question_topic[q]
        theta = self.theta0[student, q_topic] + self.learned[student, q_topic]
        z = IRT_SCALE * cur.question_a[q] * (theta - cur.question_b[q])
        p_correct = GUESS + (1 - GUESS) / (1 + np.exp(-z))
        correct = rng.random(len(q)) < p_correct

        right = cur.question_correct[q]
        misconceived = rng.random(len(q)) < np.clip(0.7 - 0.25 * theta, 0.1, 0.9)
        wrong = np.where(
            misconceived,
            (right + self.misconception[q]) % 4,
            (right + rng.integers(1, 4, len(q))) % 4,
        )
        selected = np.where(correct, right, wrong)
        skipped = ~correct & (rng.random(len(q)) < 0.03)
        selected = np.where(skipped, -1, selected)

        seconds = (25 + 20 * cur.question_marks[q]) * np.exp(0.25 * cur.question_b[q] - 0.2 * theta)
        seconds *= rng.lognormal(0, 0.3, len(q))
        rushed = ~correct & (p_correct < 0.45) & (rng.random(len(q)) < 0.35)
        seconds = np.clip(np.where(rushed, seconds * 0.35, seconds), 3, 900).round(1)

        start_us = self.window.day_us(day) + (
            (self.study_hour[takers] + rng.uniform(0, 2, n)) * 3600 * US_PER_SECOND
        ).astype(np.int64)
        per_test_seconds = np.zeros(questions.shape)
        per_test_seconds[test_index, slot] = seconds
        elapsed = np.cumsum(per_test_seconds, axis=1)[test_index, slot]
        answered_us = start_us[test_index] + (elapsed * US_PER_SECOND).astype(np.int64)

        # Practice from answering (more from the feedback on a wrong answer).
        self._learn(student, q_topic, np.where(correct, 3.0, 5.0), day)
        np.add.at(self.attempts, (student, q_topic), 1)
        np.add.at(self.correct, (student, q_topic), correct)
        np.add.at(self.time_sum, (student, q_topic), seconds)
        np.maximum.at(self.last_attempt_us, (student, q_topic), answered_us)

        n_questions = np.bincount(test_index, minlength=n)
        n_correct = np.bincount(test_index, weights=correct, minlength=n)
        duration = np.bincount(test_index, weights=seconds, minlength=n)
        return {
            "student": takers,
            "subject": taker_subject,
            "kind_quiz": is_quiz,
            "topic": np.where(is_quiz, topic, -1),
            "paper": paper,
            "question_count": n_questions,
            "score_percent": np.round(100 * n_correct / np.maximum(n_questions, 1), 2),
            "started_us": start_us,
            "completed_us": start_us + (duration * US_PER_SECOND).astype(np.int64),
            "answer_test": test_index,
            "answer_student": student,
            "answer_question": q,
            "answer_selected": selected,
            "answer_correct": correct,
            "answer_seconds": seconds,
            "answer_us": answered_us,
            "answer_theta": theta,
        }

    # -- what gets written ------------------------------------------------------------
    def _record_day(
        self,
        tables: dict[str, Rows],
        day: int,
        active: np.ndarray,
        minutes: np.ndarray,
        tests: dict[str, np.ndarray],
    ) -> None:
        rng = self.rng
        who = np.flatnonzero(active)
        stamp = self.window.day_us(day) + 22 * 3600 * US_PER_SECOND
        logins = 1 + rng.poisson(0.4 * minutes[who] / 45)
        tables["study_activity"].add(
            student=who,
            day=np.full(len(who), day),
            study_minutes=minutes[who].astype(np.int64),
            logins=logins,
            streak_days=self.streak[who],
            stamp_us=np.full(len(who), stamp),
        )
        completed = ((self.coverage >= 1.0) & self.enrolled).sum(axis=1)
        tables["user_progress"].add(
            student=who,
            day=np.full(len(who), day),
            completion_percent=np.round(self.completion()[who], 2),
            topics_completed=completed[who],
            topics_total=self.enrolled.sum(axis=1)[who],
            stamp_us=np.full(len(who), stamp),
        )
        n_tests = len(tests["student"])
        tables["tests"].add(
            day=np.full(n_tests, day),
            **{k: v for k, v in tests.items() if not k.startswith("answer_")},
        )
        tables["test_answers"].add(
            day=np.full(len(tests["answer_test"]), day),
            **{k: v for k, v in tests.items() if k.startswith("answer_")},
        )

    def _record_mastery(self, rows: Rows, day: int) -> None:
        theta = self.theta()
        accuracy = _expected_accuracy(theta, self.bank_a, self.bank_b)
        tau = LEARNING_TIME_MINUTES
        studied_learned = self.learned + (self.ceiling_gain - self.learned) * (
            1 - np.exp(-GAIN_STUDY_MINUTES / tau)
        )
        accuracy_after = _expected_accuracy(self.theta0 + studied_learned, self.bank_a, self.bank_b)
        gain = 100 * self.cur.topic_weight[None, :] * (accuracy_after - accuracy)
        joined = self.join_day <= day
        student, topic = np.nonzero(self.enrolled & joined[:, None])
        rows.add(
            student=student,
            topic=topic,
            day=np.full(len(student), day),
            theta=theta[student, topic].round(4),
            expected_accuracy=accuracy[student, topic].round(4),
            is_weak=accuracy[student, topic] < WEAK_ACCURACY,
            expected_score_gain=gain[student, topic].round(4),
        )

    def topic_performance(self) -> dict[str, np.ndarray]:
        """The app's running totals per student and topic at the end of the window."""
        student, topic = np.nonzero(self.attempts > 0)
        attempts = self.attempts[student, topic]
        correct = self.correct[student, topic]
        return {
            "student": student,
            "topic": topic,
            "attempts": attempts.astype(np.int64),
            "correct": correct.astype(np.int64),
            "accuracy": np.round(correct / attempts, 4),
            "avg_time_seconds": np.round(self.time_sum[student, topic] / attempts, 2),
            "last_attempted_us": self.last_attempt_us[student, topic],
        }
