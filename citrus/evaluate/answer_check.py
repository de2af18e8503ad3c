"""The last rung of the extraction ladder: an LLM (the `answer_mapper` role) reads the replies no
rule could and names the option each one chose, as Citrus does before scoring. The protocol's
extractor says what the mapper is shown and how its reply is read: citrus's own ladder reads it
with the same rules, so a mapper that rambles still counts only when it names one letter."""

from __future__ import annotations

from typing import Any

from citrus.data.schema import MCQuestion
from citrus.evaluate.extractors import LADDER, Extractor
from citrus.evaluate.metrics import majority_vote
from citrus.prompts import build_messages

CHECK_RULE = "answer_check"


def unread(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The answers of a prediction row (the row itself, or its samples) that no rule could read."""
    return [s for s in (row.get("samples") or [row]) if s["rule"] == "none"]


def check_answers(
    mapper: Any,
    rows: list[dict[str, Any]],
    questions: list[MCQuestion],
    prompt: str = "answer_check",
    reader: Extractor = LADDER,
) -> None:
    """Ask `mapper` which option each unread answer chose; update the rows in place: a mapped
    answer gets rule `answer_check`, every checked one keeps the mapper's reply under `check`."""
    targets = [(answer, q) for row, q in zip(rows, questions) for answer in unread(row)]
    if not targets:
        return
    replies = mapper.generate(
        [build_messages(q, prompt, response=reader.check_text(a["response"])) for a, q in targets]
    )
    for (answer, q), reply in zip(targets, replies):
        answer["check"] = reply
        found = reader.read_check(reply, q.options)
        if found:
            answer["pred"], answer["rule"] = found, CHECK_RULE
    for row in rows:
        if "samples" in row:
            row["pred"] = majority_vote([s["pred"] for s in row["samples"]])
        row["correct"] = row["pred"] == row["gold"]
