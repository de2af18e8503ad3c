"""The quickstart generator: deterministic, disjoint splits, sound items and reasoning traces."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from citrus.data import quickstart
from citrus.data.schema import MCQuestion


def test_deterministic_per_seed_and_different_across_seeds():
    a = [q.to_dict() for q in quickstart.generate("train", 50, seed=3)]
    b = [q.to_dict() for q in quickstart.generate("train", 50, seed=3)]
    c = [q.to_dict() for q in quickstart.generate("train", 50, seed=4)]
    assert a == b
    assert [q["question"] for q in a] != [q["question"] for q in c]


def test_prefix_stable_when_asking_for_more():
    small = quickstart.generate("test", 20, seed=0)
    large = quickstart.generate("test", 100, seed=0)
    assert [q.to_dict() for q in small] == [q.to_dict() for q in large[:20]]


def test_splits_share_no_clinical_content_whatever_the_seeds():
    train = quickstart.generate("train", 2000, seed=0)
    test = quickstart.generate("test", 200, seed=1)
    train_keys = {q.metadata["content_key"] for q in train}
    test_keys = {q.metadata["content_key"] for q in test}
    assert not train_keys & test_keys
    assert len(test_keys) == len(test), "test items must be distinct"
    assert not {q.question for q in train} & {q.question for q in test}


def test_items_are_valid_balanced_and_span_every_system():
    items = quickstart.generate("train", 1000, seed=0, n_options=5)
    assert all(isinstance(q, MCQuestion) and len(q.options) == 5 for q in items)
    assert len({q.id for q in items}) == len(items)
    letters = Counter(q.answer for q in items)
    assert set(letters) == set("ABCDE") and min(letters.values()) > 150  # ~200 each
    assert {q.metadata["system"] for q in items} == set(quickstart.SYSTEMS)


def test_distractors_are_a_same_system_differential():
    by_name = {d.name: d for d in quickstart.DISEASES}
    for q in quickstart.generate("test", 100, seed=0):
        systems = {by_name[name].system for name in q.options.values()}
        assert systems == {q.metadata["system"]}
        assert len(set(q.options.values())) == len(q.options)


def test_reasoning_trace_walks_findings_differential_elimination_answer():
    for q in quickstart.generate("train", 200, seed=0):
        trace = q.metadata["reasoning"]
        m = re.fullmatch(r"<think>\n(.*)\n</think>\n<answer>([A-Z])\. (.+)</answer>", trace, re.S)
        assert m, trace
        body, letter, name = m.groups()
        assert (letter, name) == (q.answer, q.answer_text)
        lines = body.splitlines()
        k = len(q.options)
        assert lines[0].startswith("Key findings:")
        assert lines[1] == "Differential:"
        assert lines[2 : 2 + k] == [
            f"{x}. {text}" for x, text in q.options.items()
        ]  # as the question shows them
        assert lines[2 + k] == "Elimination:"
        for (x, text), verdict in zip(q.options.items(), lines[3 + k : 3 + 2 * k]):
            assert verdict.startswith(f"{x}. {text} ")
            assert ("explains" in verdict) == (x == q.answer)
        assert (
            lines[-1] == f"Conclusion: {q.answer}. {q.answer_text} accounts for all the findings."
        )
        for finding in lines[0].removeprefix("Key findings: ").rstrip(".").split("; ")[1:]:
            assert finding in q.question


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        quickstart.generate("dev", 5)
    with pytest.raises(ValueError, match="n_options"):
        quickstart.generate("train", 5, n_options=9)
    with pytest.raises(ValueError, match="distinct vignettes"):
        quickstart.generate("test", quickstart.content_pool_size("test") + 1)


def test_sft_records_use_the_evaluation_prompt():
    from citrus.prompts import build_messages

    q = quickstart.generate("train", 1, seed=0)[0]
    record = quickstart.to_sft_record(q, "citrus_expert")
    assert record["messages"][:-1] == build_messages(q, "citrus_expert")
    assert record["messages"][-1] == {"role": "assistant", "content": q.metadata["reasoning"]}
