"""Metrics: pure functions, and the shipped `evaluate` module that wraps them (offline)."""

from __future__ import annotations

import evaluate
import pytest

from citrus.evaluate.metrics import (
    METRIC_PATH,
    accuracy,
    bootstrap_ci,
    majority_vote,
    score,
    summarize,
)


def test_accuracy_counts_unextracted_as_wrong():
    assert accuracy(["A", None, "C", "D"], ["A", "B", "C", "A"]) == 0.5
    with pytest.raises(ValueError, match="3 predictions for 2"):
        accuracy(["A", "B", "C"], ["A", "B"])


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_n():
    small = [1, 0] * 25
    large = [1, 0] * 2500
    lo_s, hi_s = bootstrap_ci(small, seed=1)
    lo_l, hi_l = bootstrap_ci(large, seed=1)
    assert lo_s < 0.5 < hi_s and lo_l < 0.5 < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # ~1/sqrt(100) as wide
    assert hi_s - lo_s == pytest.approx(
        2 * 1.96 * (0.25 / 50) ** 0.5, rel=0.2
    )  # normal approximation
    assert bootstrap_ci(small, seed=1) == bootstrap_ci(small, seed=1)
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0)


def test_majority_vote():
    assert majority_vote(["B", "A", "A", None]) == "A"
    assert majority_vote(["B", "A"]) == "B"  # tie: first seen
    assert majority_vote([None, None]) is None


def test_score_with_samples_reports_pass_at_1_and_majority_vote():
    out = score([["A", "A", "B"], ["B", "C", "C"], [None, None, None]], ["A", "C", "B"])
    assert out["accuracy"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert out["majority_vote_accuracy"] == pytest.approx(2 / 3)
    assert out["invalid_rate"] == pytest.approx(3 / 9) and out["n"] == 3
    assert "majority_vote_accuracy" not in score([["A"], ["B"]], ["A", "A"])


def test_valid_accuracy_leaves_out_the_answers_no_rule_read():
    """Citrus's valid_acc: right / (right + wrong). 6 samples read of 9, 4 of them right."""
    out = score([["A", "A", "B"], ["B", "C", "C"], [None, None, None]], ["A", "C", "B"])
    assert out["valid_accuracy"] == pytest.approx(4 / 6)
    assert out["valid_ci95_low"] <= 4 / 6 <= out["valid_ci95_high"]
    single = score([["A"], [None], ["C"], [None]], ["A", "B", "D", "D"])
    assert (single["accuracy"], single["valid_accuracy"]) == (0.25, 0.5)


def test_shipped_evaluate_module_loads_offline_and_agrees(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(METRIC_PATH)
    out = metric.compute(predictions=["A", "B", "", "C"], references=["A", "C", "B", "C"])
    # 2 of 4 right; the empty prediction is unread: 2 right of the 3 read
    assert (out["accuracy"], out["invalid_rate"], out["n"]) == (0.5, 0.25, 4)
    assert out["valid_accuracy"] == pytest.approx(2 / 3)
    assert out["ci95_low"] <= 0.5 <= out["ci95_high"]
    sampled = metric.compute(predictions=[["A", "B"], ["C", "C"]], references=["A", "C"])
    assert sampled["accuracy"] == 0.75 and sampled["majority_vote_accuracy"] == 1.0


def test_summarize_adds_chance_extraction_and_rule_shares():
    out = summarize(
        [["A"], [None], ["C"], ["D"]],
        ["A", "B", "C", "A"],
        ["answer_tag", "none", "answer_is", "answer_tag"],
        [4, 4, 5, 5],
    )
    assert out["accuracy"] == 0.5 and out["extracted"] == 0.75 and out["invalid_rate"] == 0.25
    assert out["chance"] == pytest.approx((0.25 + 0.25 + 0.2 + 0.2) / 4)
    assert out["rule/answer_tag"] == 0.5 and out["rule/none"] == 0.25
    assert out["ci95_low"] <= 0.5 <= out["ci95_high"]
