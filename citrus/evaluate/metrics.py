"""Metrics as pure functions of predictions and gold answers.

citrus scores with these directly. For users of Hugging Face's `evaluate` library the same
score ships as a metric module beside this file (citrus/evaluate/mc_accuracy/), which loads
offline: `evaluate.load(METRIC_PATH)` (the `evaluate` extra); citrus itself does not route
through it, since importing `evaluate` costs seconds per process and adds nothing here.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

METRIC_PATH = str(Path(__file__).resolve().parent / "mc_accuracy")


def accuracy(predicted: list[str | None], gold: list[str]) -> float:
    """Fraction of exact letter matches; an unextracted prediction (None) counts as wrong."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold answers")
    return sum(p == g for p, g in zip(predicted, gold)) / len(gold) if gold else 0.0


def bootstrap_ci(
    correct: list[float], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a mean (Efron & Tibshirani, 1993)."""
    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def majority_vote(samples: list[str | None]) -> str | None:
    """Most frequent extracted answer (self-consistency, Wang et al. 2023); ties go to the
    answer seen first; unextracted samples do not vote."""
    votes = Counter(s for s in samples if s is not None)
    if not votes:
        return None
    best = max(votes.values())
    return next(s for s in samples if s is not None and votes[s] == best)


def score(samples: list[list[str | None]], gold: list[str], seed: int = 0) -> dict[str, float]:
    """Per question, one or more sampled answers. accuracy is pass@1 averaged over the samples
    (the mean accuracy of n samples; Citrus's `acc`); valid_accuracy the same over the answers
    the extractor read: right / (right + wrong), unread and ambiguous ones left out (Citrus's
    `valid_acc` leaves out only rows whose requests failed);
    majority_vote_accuracy scores the most voted answer. Each with a 95% bootstrap interval."""
    per_question = [
        sum(s == g for s in answers) / len(answers) for answers, g in zip(samples, gold)
    ]
    n = len(gold)
    low, high = bootstrap_ci(per_question, seed=seed)
    out = {
        "accuracy": sum(per_question) / n if n else 0.0,
        "ci95_low": low,
        "ci95_high": high,
        "invalid_rate": sum(a is None for answers in samples for a in answers)
        / max(1, sum(map(len, samples))),
        "n": n,
    }
    read = [float(a == g) for answers, g in zip(samples, gold) for a in answers if a is not None]
    out["valid_accuracy"] = sum(read) / len(read) if read else 0.0
    out["valid_ci95_low"], out["valid_ci95_high"] = bootstrap_ci(read, seed=seed)
    if any(len(a) > 1 for a in samples):
        out["majority_vote_accuracy"] = accuracy([majority_vote(a) for a in samples], gold)
    return out


def summarize(
    predicted: list[list[str | None]],
    gold: list[str],
    rules: list[str],
    n_options: list[int],
    seed: int = 0,
) -> dict[str, float]:
    """score() of one or more extracted answers per question, plus the chance level to beat and
    the share of answers each extraction rule produced."""
    n = len(gold)
    out = score(predicted, gold, seed=seed)
    out["chance"] = sum(1 / k for k in n_options) / n if n else 0.0
    out["extracted"] = 1.0 - out["invalid_rate"]
    out.update(
        {f"rule/{rule}": count / len(rules) for rule, count in sorted(Counter(rules).items())}
    )
    return out
