"""Answer extraction on realistic model outputs: the letter, and the rule that found it."""

from __future__ import annotations

import pytest

from citrus.evaluate.extract import extract_answer

OPTIONS = {
    "A": "asthma exacerbation",
    "B": "community-acquired pneumonia",
    "C": "pulmonary embolism",
    "D": "pneumothorax",
}

CASES = [
    # the trained format
    (
        "<think>\nFever and crackles.\n</think>\n<answer>B. community-acquired pneumonia</answer>",
        "B",
        "answer_tag",
    ),
    ("<think>...</think>\n<answer>\nC\n</answer>", "C", "answer_tag"),
    ("<answer>**D**</answer>", "D", "answer_tag"),
    ("<answer>(A) asthma exacerbation</answer>", "A", "answer_tag"),
    ("<answer>Option C</answer>", "C", "answer_tag"),
    ("<answer>The answer is C because of the D-dimer.</answer>", "C", "answer_tag"),
    ("<answer>pulmonary embolism</answer>", "C", "answer_tag"),
    ("<think>A is unlikely</think><answer>C: pulmonary embolism", "C", "answer_tag"),  # unclosed
    (
        "<answer>first guess A</answer> ... <answer>D.</answer>",
        "D",
        "answer_tag",
    ),  # the last tag wins
    # no usable tag: common phrasings
    ("After weighing everything, the answer is (D).", "D", "answer_is"),
    ("Final Answer: **B**", "B", "answer_is"),
    ("so the correct option is c", "C", "answer_is"),
    ("Option A is unlikely. Option B fits poorly. The best choice is C.", "C", "answer_is"),
    ("<answer>I cannot decide</answer> The answer: B", "B", "answer_is"),
    ("ANSWER - Option D", "D", "answer_is"),
    # bare letters
    ("C", "C", "bare_letter"),
    ("(A).", "A", "bare_letter"),
    ("Reasoning about the chest pain...\n\n**B**", "B", "bare_letter"),
    ("b", "B", "bare_letter"),
    # option text only
    ("This is most consistent with a pneumothorax.", "D", "option_text"),
    # nothing to extract
    ("A 45-year-old man with chest pain.", None, "none"),
    ("It could be asthma exacerbation or pneumothorax.", None, "none"),
    ("The answer is a difficult one.", None, "none"),
    ("<answer>A patient like this needs imaging</answer>", None, "none"),
    ("", None, "none"),
    ("The answer is E.", None, "none"),  # not an option
]


@pytest.mark.parametrize("response,letter,rule", CASES, ids=[c[0][:40] for c in CASES])
def test_extraction_ladder(response, letter, rule):
    got = extract_answer(response, OPTIONS)
    assert (got.letter, got.rule) == (letter, rule)


def test_option_text_prefers_the_specific_option():
    options = {"A": "cystitis", "B": "interstitial cystitis", "C": "urethritis"}
    assert extract_answer("Findings point to interstitial cystitis.", options).letter == "B"


def test_ten_option_letters():
    options = {k: f"option {k}" for k in "ABCDEFGHIJ"}
    assert extract_answer("The answer is (J).", options).letter == "J"
