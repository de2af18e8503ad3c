"""Metrics as pure functions of predictions and gold answers."""

from __future__ import annotations

from collections import Counter


def accuracy(predicted: list[str | None], gold: list[str]) -> float:
    """Fraction of exact letter matches; an unextracted prediction (None) counts as wrong."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold answers")
    return sum(p == g for p, g in zip(predicted, gold)) / len(gold) if gold else 0.0


def summarize(predicted: list[str | None], gold: list[str], rules: list[str], n_options: list[int]) -> dict[str, float]:
    """Accuracy, the chance level it should beat, and how often each extraction rule fired."""
    n = len(gold)
    out = {
        "accuracy": accuracy(predicted, gold),
        "chance": sum(1 / k for k in n_options) / n if n else 0.0,
        "extracted": sum(p is not None for p in predicted) / n if n else 0.0,
        "n": n,
    }
    out.update({f"rule/{rule}": count / n for rule, count in sorted(Counter(rules).items())})
    return out
