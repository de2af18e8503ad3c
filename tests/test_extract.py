"""Answer extraction on realistic model outputs: the letter, and the rule that found it.

Two tables of replies with the answer a careful reader takes from each (None: the reply commits
to no single option) in tests/data/: `extraction_replies.jsonl`, 1658 replies in six sets, each
written apart from the extractor and from the other sets, in the forms models answer in (Citrus
<answer> tags, \\boxed{}, JSON, Chinese, HuatuoGPT-o1's "## Final Response", R1 reasoning,
MMLU-Pro's ten options, PubMedQA's yes/no/maybe, negations, self-corrections, two answers,
small-model loops and echoes), and `extraction_smollm2.jsonl`, 66 real replies of
SmolLM2-135M-Instruct (base, SFT and CPO-SimPO) to MedQA, PubMedQA, MMLU and MedBullets questions
with the Citrus expert prompt, each read by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citrus.evaluate.extract import extract_answer

DATA = Path(__file__).parent / "data"

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
    # option text only: a one-line reply is read whole, a longer one needs exactly one option
    ("This is most consistent with a pneumothorax.", "D", "short_reply"),
    ("Crackles at the base.\nThis is most consistent with a pneumothorax.", "D", "option_text"),
    ("Crackles at the base.\nNot pneumonia: a pneumothorax.", "D", "conclusion"),
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


# What a new user tried (issue 15): each misread before EXTRACTOR_VERSION 2
ULCER = {
    "A": "Chronic NSAID use",
    "B": "H. pylori infection",
    "C": "Zollinger-Ellison syndrome",
    "D": "Crohn disease",
}
ECOLI = {"A": "Klebsiella pneumoniae", "B": "E. coli", "C": "Proteus mirabilis", "E": "Candida"}
TEN = {k: f"finding {k.lower()}" for k in "ABCDEFGHIJ"}
PUBMEDQA = {"A": "yes", "B": "no", "C": "maybe"}
SEEN = [
    ("<answer>H. pylori infection</answer>", ULCER, "B", "answer_tag"),
    (
        "<answer>H. pylori infection</answer>",
        {**ULCER, **TEN, "B": "H. pylori infection"},
        "B",
        "answer_tag",
    ),
    ("<answer>E. coli</answer>", ECOLI, "B", "answer_tag"),
    ("the correct answer I believe is B", TEN, "B", "answer_is"),
    ("Yes, but not in all cases", PUBMEDQA, "A", "short_reply"),
    ("Maybe; the data are not conclusive", PUBMEDQA, "C", "short_reply"),
    ("It is not known.", PUBMEDQA, None, "none"),
    ("Answer: (A) and (C)", OPTIONS, None, "ambiguous"),
    (r"So the answer is \boxed{B}.", OPTIONS, "B", "boxed"),
    ("答案是C", OPTIONS, "C", "answer_is"),
    ("综上所述，故选Ｂ。", OPTIONS, "B", "answer_is"),
    ("option C is the correct answer", OPTIONS, "C", "answer_is"),
    ("B is correct.", OPTIONS, "B", "answer_is"),
    ("Of these, I would choose (C).", OPTIONS, "C", "answer_is"),
    ("Not A, it's B.", OPTIONS, "B", "answer_is"),
    ('{"answer": "D", "reason": "A and B do not fit"}', OPTIONS, "D", "json"),
]


# Version 3: a hedge voids an answer only once the reply turns back on it
DIABETES = {"A": "Metformin", "B": "Insulin", "C": "Sulfonylurea", "D": "Acarbose"}
SEEN += [
    ("The answer is A. Its dose is adjusted depending on renal function.", DIABETES, "A",
     "answer_is"),
    ("Final answer: B. None of the options are correct for type 1 otherwise.", DIABETES, "B",
     "answer_is"),
    ("The answer is B. Wait, actually the HbA1c... I'm torn between C and D here.", DIABETES,
     None, "none"),
    ("It could be A or C depending on renal function.", DIABETES, None, "none"),
    ("答案：是。术前营养支持降低了感染率。", PUBMEDQA, "A", "answer_is"),
]  # fmt: skip


@pytest.mark.parametrize("response,options,letter,rule", SEEN, ids=[c[0][:40] for c in SEEN])
def test_what_a_new_user_saw_misread(response, options, letter, rule):
    got = extract_answer(response, options)
    assert (got.letter, got.rule) == (letter, rule)


def test_an_answer_check_reply_of_none_is_not_no():
    assert extract_answer("none", PUBMEDQA).letter is None
    assert extract_answer("None of them.", PUBMEDQA).letter is None


def table(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


@pytest.mark.parametrize("name", ["extraction_replies.jsonl", "extraction_smollm2.jsonl"])
def test_reply_tables_are_read_right_and_never_misread(name):
    rows = table(name)
    read = [extract_answer(r["reply"], r["options"]).letter for r in rows]
    misread = [r for r, got in zip(rows, read) if got and got != r["expected"]]
    right = sum(got == r["expected"] for r, got in zip(rows, read))
    assert not misread, "\n".join(f"{r['note']}: {r['reply'][:80]!r}" for r in misread)
    assert right / len(rows) >= 0.98, f"{right}/{len(rows)} read right"


def test_the_tables_hold_what_they_claim():
    replies, smol = table("extraction_replies.jsonl"), table("extraction_smollm2.jsonl")
    assert len(replies) == 1658 and len(smol) == 66
    assert sum(r["expected"] is None for r in replies) >= 100  # replies that choose nothing
    assert any(len(r["options"]) == 10 for r in replies)
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in r["reply"]) for r in replies)
    assert all(r["expected"] is None or r["expected"] in r["options"] for r in replies + smol)


def test_a_new_extractor_version_starts_the_stored_predictions_afresh(tmp_path, monkeypatch):
    from conftest import compose_config

    from citrus.evaluate import evaluator

    cfg = compose_config("evaluate", [])
    evaluator.resumable_predictions(tmp_path, cfg).append([{"id": "q1", "pred": "A"}])
    assert set(evaluator.resumable_predictions(tmp_path, cfg).done) == {"q1"}  # same stamp
    monkeypatch.setattr(evaluator, "EXTRACTOR_VERSION", "older")
    assert evaluator.resumable_predictions(tmp_path, cfg).done == {}
