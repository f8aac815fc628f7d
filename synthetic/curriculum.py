"""Subjects, topics, past papers and their questions, with the hidden parameters that make
them behave like a real exam: per-topic cycles and trends in which topics come up, classic
questions that return, and IRT difficulty/discrimination for every question."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from synthetic.catalog import SUBJECTS, TEMPLATES

PAPER_YEARS = 12  # years of past papers in the source; the year after is held back
QUESTIONS_PER_PAPER = 24
CLASSICS_PER_TOPIC = 3
EXAM_MONTH_DAY = (6, 10)  # papers are sat in June
N_CLUSTERS = 4  # latent learner archetypes: what similar students find easy or hard


@dataclass(frozen=True)
class Curriculum:
    """Everything shared by all students: syllabus, papers, question bank, population traits."""

    subject_codes: list[str]
    subject_names: list[str]
    topic_subject: np.ndarray  # [T] subject index of each topic
    topic_names: list[str]
    topic_position: np.ndarray  # [T] order within its subject's syllabus
    topic_weight: np.ndarray  # [T] share of its subject's marks (sums to 1 per subject)
    topic_required_minutes: np.ndarray  # [T] study needed to cover the topic
    topic_period: np.ndarray  # [T] the topic comes up every 1, 2 or 3 years ...
    topic_phase: np.ndarray  # [T] ... in the years where (year - phase) % period == 0
    topic_trend: np.ndarray  # [T] drift of its share per year
    cluster_affinity: np.ndarray  # [K, T] head start of each archetype on each topic
    cluster_learnability: np.ndarray  # [K, T] how fast each archetype learns each topic
    paper_subject: np.ndarray  # [P]
    paper_year: np.ndarray  # [P]
    paper_date: list[date]
    question_paper: np.ndarray  # [Q] index into papers
    question_topic: np.ndarray  # [Q]
    question_number: np.ndarray  # [Q]
    question_text: list[str]
    question_marks: np.ndarray  # [Q]
    question_app_difficulty: np.ndarray  # [Q] 1-5 as the app rates it
    question_b: np.ndarray  # [Q] true IRT difficulty
    question_a: np.ndarray  # [Q] true IRT discrimination
    question_correct: np.ndarray  # [Q] index 0-3 of the right option
    question_classic: np.ndarray  # [Q] id of the classic question it repeats, -1 if new
    held_back: dict[str, np.ndarray | list[str]]  # the next year's papers (truth only)

    @property
    def n_topics(self) -> int:
        return len(self.topic_names)

    def topic_bank(self) -> tuple[np.ndarray, np.ndarray]:
        """Questions of each topic as a padded matrix [T, max] (-1 pad) and their counts."""
        counts = np.bincount(self.question_topic, minlength=self.n_topics)
        bank = np.full((self.n_topics, max(int(counts.max()), 1)), -1, dtype=np.int64)
        for topic in range(self.n_topics):
            ids = np.flatnonzero(self.question_topic == topic)
            bank[topic, : len(ids)] = ids
        return bank, counts

    def paper_bank(self) -> tuple[np.ndarray, np.ndarray]:
        """Questions of each paper as a padded matrix [P, max] (-1 pad) and their counts."""
        n_papers = len(self.paper_year)
        counts = np.bincount(self.question_paper, minlength=n_papers)
        bank = np.full((n_papers, int(counts.max())), -1, dtype=np.int64)
        for paper in range(n_papers):
            ids = np.flatnonzero(self.question_paper == paper)
            bank[paper, : len(ids)] = ids
        return bank, counts


def _question_text(rng: np.random.Generator, topic_name: str, terms: tuple[str, ...]) -> str:
    a, b, c = rng.choice(len(terms), size=3, replace=False)
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return template.format(a=terms[a], b=terms[b], c=terms[c], topic=topic_name.lower())


def build_curriculum(rng: np.random.Generator, last_exam_year: int) -> Curriculum:
    """Draw the syllabus and `PAPER_YEARS` years of papers up to `last_exam_year`, plus the
    held-back paper of the year after (ground truth for the question ranker)."""
    topic_subject, topic_names, topic_position, topic_weight, topic_terms = [], [], [], [], []
    for s_index, subject in enumerate(SUBJECTS):
        weights = rng.dirichlet(np.full(len(subject.topics), 4.0))
        for position, (spec, weight) in enumerate(zip(subject.topics, weights, strict=True)):
            topic_subject.append(s_index)
            topic_names.append(spec.name)
            topic_position.append(position)
            topic_weight.append(float(weight))
            topic_terms.append(spec.terms)
    t_subject = np.array(topic_subject)
    t_weight = np.array(topic_weight)
    n_topics = len(topic_names)
    topics_per_subject = np.bincount(t_subject)[t_subject]
    required = 60.0 * (3.0 + 40.0 * t_weight * topics_per_subject / 15.0)

    # How often each topic comes up: a syllabus-weight base, a cycle (every year, every
    # other year, every third year) and a slow trend, so next year is predictable from the
    # past but not by frequency alone.
    period = rng.choice([1, 2, 3], size=n_topics, p=[0.45, 0.35, 0.20])
    phase = rng.integers(0, 3, size=n_topics) % period
    trend = rng.normal(0.0, 0.12, size=n_topics)
    topic_base_difficulty = rng.normal(0.0, 0.5, size=n_topics)
    repeat_rate = rng.beta(2.0, 3.0, size=n_topics)

    classics = []  # per topic: list of (text, b, a, marks, correct option)
    for topic in range(n_topics):
        topic_classics = []
        for _ in range(CLASSICS_PER_TOPIC):
            b = float(rng.normal(topic_base_difficulty[topic], 0.6))
            topic_classics.append(
                (
                    _question_text(rng, topic_names[topic], topic_terms[topic]),
                    b,
                    float(rng.lognormal(np.log(1.3), 0.25)),
                    int(np.clip(round(3 + b + rng.normal(0, 1.0)), 1, 8)),
                    int(rng.integers(4)),
                )
            )
        classics.append(topic_classics)
    classic_popularity = rng.dirichlet(np.full(CLASSICS_PER_TOPIC, 0.7), size=n_topics)

    years = list(range(last_exam_year - PAPER_YEARS + 1, last_exam_year + 2))
    mid_year = last_exam_year - PAPER_YEARS / 2
    papers: list[tuple[int, int, date]] = []
    questions: dict[str, list[object]] = {
        k: [] for k in ("paper", "topic", "number", "text", "marks", "b", "a", "correct", "classic")
    }
    for year in years:
        for s_index in range(len(SUBJECTS)):
            subject_topics = np.flatnonzero(t_subject == s_index)
            on_cycle = ((year - phase[subject_topics]) % period[subject_topics]) == 0
            cycle_effect = np.where(period[subject_topics] == 1, 0.0, np.where(on_cycle, 0.9, -0.9))
            logits = (
                np.log(t_weight[subject_topics])
                + cycle_effect
                + trend[subject_topics] * (year - mid_year)
                + rng.normal(0.0, 0.25, size=len(subject_topics))
            )
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            counts = rng.multinomial(QUESTIONS_PER_PAPER, probs)
            paper_index = len(papers)
            papers.append((s_index, year, date(year, *EXAM_MONTH_DAY)))
            number = 0
            for topic_np, count in zip(subject_topics, counts, strict=True):
                topic = int(topic_np)
                for _ in range(count):
                    number += 1
                    if rng.random() < repeat_rate[topic]:
                        classic = int(rng.choice(CLASSICS_PER_TOPIC, p=classic_popularity[topic]))
                        text, b, a, marks, correct = classics[topic][classic]
                        classic_id = topic * CLASSICS_PER_TOPIC + classic
                    else:
                        text = _question_text(rng, topic_names[topic], topic_terms[topic])
                        b = float(rng.normal(topic_base_difficulty[topic], 0.7))
                        a = float(rng.lognormal(np.log(1.3), 0.25))
                        marks = int(np.clip(round(3 + b + rng.normal(0, 1.0)), 1, 8))
                        correct = int(rng.integers(4))
                        classic_id = -1
                    for key, value in zip(
                        questions,
                        (paper_index, topic, number, text, marks, b, a, correct, classic_id),
                        strict=True,
                    ):
                        questions[key].append(value)

    q_paper = np.array(questions["paper"])
    paper_year = np.array([p[1] for p in papers])
    q_b = np.array(questions["b"], dtype=float)
    # The app's 1-5 rating is a noisy reading of the true difficulty.
    app_difficulty = (
        np.digitize(q_b + rng.normal(0, 0.4, size=len(q_b)), [-1.0, -0.35, 0.35, 1.0]) + 1
    )

    columns = {
        "paper": q_paper,
        "topic": np.array(questions["topic"]),
        "number": np.array(questions["number"]),
        "text": np.array(questions["text"], dtype=object),
        "marks": np.array(questions["marks"]),
        "app_difficulty": app_difficulty,
        "b": q_b,
        "a": np.array(questions["a"], dtype=float),
        "correct": np.array(questions["correct"]),
        "classic": np.array(questions["classic"]),
    }
    visible = paper_year[q_paper] <= last_exam_year
    held = {key: value[~visible] for key, value in columns.items()}
    held_back: dict[str, np.ndarray | list[str]] = {
        "subject": np.array([papers[p][0] for p in held["paper"]]),
        "exam_year": paper_year[held["paper"]],
        "topic": held["topic"],
        "number": held["number"],
        "text": list(held["text"]),
        "marks": held["marks"],
        "difficulty": held["app_difficulty"],
        "classic": held["classic"],
    }
    n_visible_papers = int((paper_year <= last_exam_year).sum())
    return Curriculum(
        subject_codes=[s.code for s in SUBJECTS],
        subject_names=[s.name for s in SUBJECTS],
        topic_subject=t_subject,
        topic_names=topic_names,
        topic_position=np.array(topic_position),
        topic_weight=t_weight,
        topic_required_minutes=required,
        topic_period=period,
        topic_phase=phase,
        topic_trend=trend,
        cluster_affinity=rng.normal(0.0, 0.45, size=(N_CLUSTERS, n_topics)),
        cluster_learnability=rng.lognormal(0.0, 0.35, size=(N_CLUSTERS, n_topics)),
        paper_subject=np.array([p[0] for p in papers[:n_visible_papers]]),
        paper_year=paper_year[:n_visible_papers],
        paper_date=[p[2] for p in papers[:n_visible_papers]],
        question_paper=columns["paper"][visible],
        question_topic=columns["topic"][visible],
        question_number=columns["number"][visible],
        question_text=list(columns["text"][visible]),
        question_marks=columns["marks"][visible],
        question_app_difficulty=columns["app_difficulty"][visible],
        question_b=columns["b"][visible],
        question_a=columns["a"][visible],
        question_correct=columns["correct"][visible],
        question_classic=columns["classic"][visible],
        held_back=held_back,
    )
