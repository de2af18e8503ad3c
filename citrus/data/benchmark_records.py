"""One record of a benchmark's published file -> an MCQuestion, a converter per format. Each
takes (raw record, task name, record number) and raises on a malformed record; the loaders in
benchmarks.py name the file and record at fault."""

from __future__ import annotations

import ast
from typing import Any

from citrus.data.schema import LETTERS, DataError, MCQuestion


def _options(texts: list[Any]) -> dict[str, str]:
    return {LETTERS[i]: str(t).strip() for i, t in enumerate(texts)}


def _letter(index: Any, base: int) -> str:
    return LETTERS[int(float(index)) - base]


def medqa(raw: dict, task: str, n: int) -> MCQuestion:
    return MCQuestion(
        f"{task}-{n:05d}",
        task,
        raw["question"],
        dict(sorted(raw["options"].items())),
        raw["answer_idx"],
        metadata={"meta_info": raw.get("meta_info")},
    )


def mmlu(raw: list, task: str, n: int) -> MCQuestion:
    if len(raw) != 6:
        raise DataError(f"expected 6 columns (question, A-D, answer), got {len(raw)}")
    return MCQuestion(f"{task}-{n:05d}", task, raw[0], _options(raw[1:5]), raw[5].strip())


def mmlu_pro(raw: dict, task: str, n: int) -> MCQuestion:
    options = (
        raw["options"] if isinstance(raw["options"], list) else ast.literal_eval(raw["options"])
    )
    return MCQuestion(
        f"{task}-{raw['question_id']}",
        task,
        raw["question"],
        _options(options),
        raw["answer"],
        metadata={"src": raw.get("src"), "category": raw.get("category")},
    )


def medbullets(raw: dict, task: str, n: int) -> MCQuestion:
    texts = [raw[k] for k in ("opa", "opb", "opc", "opd", "ope") if raw.get(k) is not None]
    return MCQuestion(
        f"{task}-{n:05d}",
        task,
        raw["question"],
        _options(texts),
        raw["answer_idx"],
        metadata={"link": raw.get("link")},
    )


def careqa(raw: dict, task: str, n: int) -> MCQuestion:
    return MCQuestion(
        f"{task}-{raw['unique_id']}",
        task,
        raw["question"],
        _options([raw[f"op{i}"] for i in range(1, 5)]),
        _letter(raw["cop"], 1),
        metadata={"year": raw.get("year"), "category": raw.get("category")},
    )


def medmcqa(raw: dict, task: str, n: int, zero_based: bool) -> MCQuestion:
    return MCQuestion(
        f"{task}-{raw['id']}",
        task,
        raw["question"],
        _options([raw["opa"], raw["opb"], raw["opc"], raw["opd"]]),
        _letter(raw["cop"], 0 if zero_based else 1),
        metadata={"subject": raw.get("subject_name")},
    )


# ---------------------------------------------------------------- loaders: task -> LoadedTask
