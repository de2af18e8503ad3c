"""The parsers of the LLM roles' replies, on well-formed, sloppy and malformed outputs."""

from __future__ import annotations

import pytest

from citrus.synthesis.parsers import (
    parse_open_question,
    parse_preference,
    parse_rating,
    parse_score,
    parse_step,
    parse_verdict,
)

RATINGS = [
    ("Rating: 1\nFeedback: Now weigh each candidate.", (1, "Now weigh each candidate.")),
    (
        "**Rating:** 0\n**Feedback:** The lab value does not support that.",
        (0, "The lab value does not support that."),
    ),
    ('{"rating": 1, "feedback": "Good."}', (1, "Good.")),
    ('```json\n{"valid": 0, "feedback": "Circular."}\n```', (0, "Circular.")),
    ("rating=1", (1, "")),
    ("Validity: 0. Feedback - reconsider the timing", (0, "")),
    ("Rating: 7\nFeedback: great", (None, "great")),
    ("The step looks fine to me.", (None, "")),
    ("", (None, "")),
]


@pytest.mark.parametrize("reply,expected", RATINGS)
def test_parse_rating(reply, expected):
    assert parse_rating(reply) == expected


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("Complete: yes", True),
        ("**Complete:** No", False),
        ("complete = true", True),
        ('{"complete": false}', False),
        ("yes", True),
        ("No.", False),
        ("Complete: maybe", None),
        ("The reasoning covers most things.", None),
        ("", None),
    ],
)
def test_parse_verdict(reply, expected):
    assert parse_verdict(reply) == expected


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("Score: 85", 85),
        ("**Score**: 40/100", 40),
        ('{"score": 72}', 72),
        ("score 100", 100),
        ("55", 55),
        ("90/100", 90),
        ("Score: 250", None),
        ("Score: high", None),
        ("I would rate it well.", None),
        ("", None),
    ],
)
def test_parse_score(reply, expected):
    assert parse_score(reply) == expected


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("Better: A", "A"),
        ("**Better:** b", "B"),
        ('{"better": "B"}', "B"),
        ("Better answer: (A)", "A"),
        ("A", "A"),
        ("Answer B", "B"),
        ("Better: C", None),
        ("Both are fine.", None),
        ("", None),
    ],
)
def test_parse_preference(reply, expected):
    assert parse_preference(reply) == expected


@pytest.mark.parametrize(
    "reply,expected",
    [
        (
            "A 45-year-old man has fever and flank pain. What is the most likely diagnosis?",
            "A 45-year-old man has fever and flank pain. What is the most likely diagnosis?",
        ),
        (
            'Open-ended question: "A woman has a cough for 2 weeks. What is the diagnosis?"',
            "A woman has a cough for 2 weeks. What is the diagnosis?",
        ),
        (
            "<think>rewrite it</think>**Question:** "
            "A boy has a rash on both legs. Which condition explains it?",
            "A boy has a rash on both legs. Which condition explains it?",
        ),
        ("A man has chest pain. What is it?\nA. MI\nB. GERD", None),  # options left in
        ("What?", None),  # too short
        ("A 45-year-old man has fever and flank pain.", None),  # not a question
        ("", None),
    ],
)
def test_parse_open_question(reply, expected):
    assert parse_open_question(reply) == expected


@pytest.mark.parametrize(
    "reply,expected",
    [
        (
            "Step 3: The low sodium argues against a simple viral illness.",
            "The low sodium argues against a simple viral illness.",
        ),
        (
            "<think>hmm</think>Next step: list the differential diagnosis now.",
            "list the differential diagnosis now.",
        ),
        ("ok", None),
        ("", None),
    ],
)
def test_parse_step(reply, expected):
    assert parse_step(reply) == expected
