"""The LLM answer check, last rung of the extraction ladder: replies no rule can read go to the
`answer_mapper` role, over a real HTTP server on 127.0.0.1 or through the evaluated model itself."""

from __future__ import annotations

import json
import re

import pytest
from chat_server import ChatServer
from conftest import SMOKE, compose_config

from citrus.data import quickstart
from citrus.engines import build_role_engine
from citrus.engines.hf import HFEngine
from citrus.evaluate.answer_check import check_answers
from citrus.evaluate.evaluator import prediction_row, sampled_row
from citrus.evaluate.extract import extract_answer
from citrus.jobs import execute
from citrus.prompts import build_messages

ORDINALS = {"first": "A", "second": "B", "third": "C", "fourth": "D"}


class OrdinalReader:
    """Stands in for the strong hosted model Citrus asks: it understands "the second one", which
    no extraction rule reads, and says none otherwise. It answers in markdown, as models do."""

    def __init__(self):
        self.prompts: list[list[dict]] = []

    def generate(self, conversations, on_batch=None, seeds=None):
        self.prompts += conversations
        replies = []
        for messages in conversations:
            reply = messages[-1]["content"].split("Reply (its end):", 1)[1]
            found = re.findall(r"\b(first|second|third|fourth)\b", reply.lower())
            replies.append(f"**{ORDINALS[found[-1]]}**" if found else "none")
        return replies


@pytest.fixture(scope="module")
def questions():
    return quickstart.generate("test", 4, seed=5)


def mapper_over_http(url: str, tmp_path):
    cfg = compose_config(
        "evaluate",
        [
            "role@roles.answer_mapper=openai",
            f"roles.answer_mapper.engine.base_url={url}",
            "roles.answer_mapper.engine.served_model=reader",
            f"roles.answer_mapper.engine.cache_path={tmp_path / 'cache.jsonl'}",
        ],
    )
    return build_role_engine(cfg.roles.answer_mapper)


def test_the_prompt_shows_the_question_its_options_and_the_reply(questions):
    q = questions[0]
    messages = build_messages(
        q, "answer_check", response="I would go with the {question} second one."
    )
    user = messages[-1]["content"]
    assert messages[0]["role"] == "system" and "single letter" in messages[0]["content"]
    assert q.question.strip() in user and all(f"{k}. {v}" in user for k, v in q.options.items())
    assert user.rstrip().endswith("Answer with one letter, or none.")
    assert "the {question} second one" in user  # a reply's braces are left as written
    with pytest.raises(ValueError, match="no {answer} placeholder"):
        build_messages(q, "answer_check", answer="x")


def test_unread_replies_are_mapped_and_read_ones_left_alone(questions, tmp_path):
    q1, q2, q3, q4 = questions
    rows = [
        prediction_row(
            "t", q1, [], "Weighing it all, the third option fits the findings."
        ),  # rule none
        prediction_row("t", q2, [], "<answer>B</answer>"),  # read by a rule: never sent
        prediction_row("t", q3, [], "I cannot decide."),  # none, and the mapper says none too
        sampled_row("t", q4, [], ["Surely the first.", "A", "It must be the second one."]),
    ]
    assert [r["rule"] for r in rows[:3]] == ["none", "answer_tag", "none"]
    reader = OrdinalReader()
    with ChatServer(reader) as server:
        check_answers(mapper_over_http(server.url, tmp_path), rows, questions)
    assert len(reader.prompts) == 4  # three unread replies of row 1, 3, 4 (two samples)
    assert (rows[0]["pred"], rows[0]["rule"], rows[0]["check"]) == ("C", "answer_check", "**C**")
    assert rows[0]["correct"] == (q1.answer == "C")
    assert (rows[1]["pred"], rows[1]["rule"]) == ("B", "answer_tag") and "check" not in rows[1]
    assert (rows[2]["pred"], rows[2]["rule"], rows[2]["check"]) == (None, "none", "none")
    assert [(s["pred"], s["rule"]) for s in rows[3]["samples"]] == [
        ("A", "answer_check"),
        ("A", "bare_letter"),
        ("B", "answer_check"),
    ]
    assert rows[3]["pred"] == "A" and rows[3]["correct"] == (
        q4.answer == "A"
    )  # majority vote redone


def test_the_evaluated_model_can_map_its_own_replies(questions):
    cfg = compose_config("evaluate", ["model=tiny_llama", "roles.answer_mapper.max_new_tokens=5"])
    engine = HFEngine(cfg.engine, cfg.model)
    mapper = build_role_engine(cfg.roles.answer_mapper, engine)
    assert (
        mapper.model is engine.model
        and mapper.cfg.max_new_tokens == 5
        and engine.cfg.max_new_tokens == cfg.engine.max_new_tokens
    )
    rows = [prediction_row("t", q, [], "no letter here") for q in questions]
    check_answers(mapper, rows, questions)
    for row, q in zip(rows, questions):
        assert len(engine.tokenizer(row["check"], add_special_tokens=False)["input_ids"]) <= 5
        assert row["pred"] == extract_answer(row["check"], q.options).letter


def test_evaluate_with_answer_check_writes_every_question_once(tmp_path):
    reader = OrdinalReader()
    with ChatServer(reader) as server:
        overrides = [
            *SMOKE,
            "benchmark.answer_check=true",
            "role@roles.answer_mapper=openai",
            f"roles.answer_mapper.engine.base_url={server.url}",
            "roles.answer_mapper.engine.served_model=reader",
            f"roles.answer_mapper.engine.cache_path={tmp_path / 'cache.jsonl'}",
        ]
        execute("evaluate", compose_config("evaluate", overrides), tmp_path, overrides)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted({r["id"] for r in rows}) and len(rows) == 6
    checked = [r for r in rows if "check" in r]
    assert checked, "the untrained model's replies should leave something for the mapper"
    assert (
        len(checked)
        == len(reader.prompts)
        == sum(r["rule"] in {"none", "answer_check"} for r in rows)
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["answer_check"]["engine"]["served_model"] == "reader"
    task = metrics["tasks"]["quickstart"]
    assert sum(v for k, v in task.items() if k.startswith("rule/")) == pytest.approx(1.0)
    assert task["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 6)
