"""The two record shapes every stage speaks, and their JSONL files.

- `MCQuestion`: one multiple-choice item in the unified schema (benchmarks, quickstart, labels).
- SFT record: `{"id": ..., "messages": [{"role", "content"}, ...]}`, the last message being the
  assistant reply that is trained on.

Readers name the file and line of a bad record, so a broken file fails loudly and precisely.
"""

from __future__ import annotations

import json
import logging
import os
import string
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from citrus.errors import DataError  # noqa: F401  (raised here; imported from here by loaders)

LETTERS = string.ascii_uppercase
log = logging.getLogger(__name__)


@dataclass
class MCQuestion:
    id: str
    benchmark: str
    question: str
    options: dict[str, str]  # ordered letter -> text, letters contiguous from "A"
    answer: str  # the correct letter
    context: str | None = None  # e.g. the PubMedQA abstract
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"question {self.id!r} ({self.benchmark})"
        if not self.question or not self.question.strip():
            raise DataError(f"{where}: empty question")
        if len(self.options) < 2:
            raise DataError(f"{where}: needs at least 2 options, got {len(self.options)}")
        expected = list(LETTERS[: len(self.options)])
        if list(self.options) != expected:
            raise DataError(f"{where}: option letters must be {expected}, got {list(self.options)}")
        if self.answer not in self.options:
            raise DataError(f"{where}: answer {self.answer!r} is not among options {expected}")

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> MCQuestion:
        missing = [
            k for k in ("id", "benchmark", "question", "options", "answer") if k not in record
        ]
        if missing:
            raise DataError(f"record {record.get('id', '?')!r}: missing field(s) {missing}")
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})


def validate_sft_record(record: dict[str, Any]) -> dict[str, Any]:
    rid = record.get("id", "?")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"SFT record {rid!r}: 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise DataError(f"SFT record {rid!r}: message {i} needs a role system/user/assistant")
        if not isinstance(m.get("content"), str):
            raise DataError(f"SFT record {rid!r}: message {i} has no text content")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise DataError(f"SFT record {rid!r}: the last message must be a non-empty assistant reply")
    return record


def validate_preference_record(record: dict[str, Any]) -> dict[str, Any]:
    """A prompt (messages ending with the user turn) and two replies, chosen over rejected."""
    rid = record.get("id", "?")
    messages = record.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise DataError(
            f"preference record {rid!r}: 'messages' must be a non-empty list of messages"
        )
    if messages[-1].get("role") != "user":
        raise DataError(f"preference record {rid!r}: the prompt must end with a user message")
    validate_sft_record({"id": rid, "messages": [*messages, {"role": "assistant", "content": "x"}]})
    for side in ("chosen", "rejected"):
        if not isinstance(record.get(side), str) or not record[side].strip():
            raise DataError(f"preference record {rid!r}: {side!r} must be a non-empty reply")
    if record["chosen"] == record["rejected"]:
        raise DataError(f"preference record {rid!r}: chosen and rejected are the same reply")
    return record


def validate_prompt_record(record: dict[str, Any]) -> dict[str, Any]:
    """A prompt for online RL (messages ending with the user turn) and what its completions are
    scored against: the multiple-choice `question` (unified schema, its gold letter) and/or a
    free-text `reference` answer (open questions, scored by an LLM judge)."""
    rid = record.get("id", "?")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        raise DataError(f"prompt record {rid!r}: 'messages' must be a non-empty list of messages")
    if messages[-1].get("role") != "user":
        raise DataError(f"prompt record {rid!r}: the prompt must end with a user message")
    validate_sft_record({"id": rid, "messages": [*messages, {"role": "assistant", "content": "x"}]})
    question, reference = record.get("question"), record.get("reference")
    if question is None and not (isinstance(reference, str) and reference.strip()):
        raise DataError(
            f"prompt record {rid!r}: needs a 'question' (multiple choice, with its answer) or a "
            "'reference' answer to score completions against"
        )
    if question is not None:
        MCQuestion.from_dict(question)  # its own error names the question
    return record


VALIDATORS = {
    "sft": validate_sft_record,
    "preference": validate_preference_record,
    "prompt": validate_prompt_record,
}


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file; a bad line raises DataError naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: bad JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            yield record


def load_records(path: str | os.PathLike, kind: str) -> list[Any]:
    """Read and validate a whole file: kind 'mc' gives MCQuestions, 'sft' / 'preference' give
    validated training dicts."""
    if kind != "mc" and kind not in VALIDATORS:
        raise ValueError(f"unknown record kind {kind!r}; one of {['mc', *VALIDATORS]}")
    out, seen = [], set()
    for lineno, record in enumerate(read_jsonl(path), 1):
        try:
            item = MCQuestion.from_dict(record) if kind == "mc" else VALIDATORS[kind](record)
        except (DataError, TypeError) as e:
            raise DataError(f"{path}: record {lineno}: {e}") from None
        rid = item.id if kind == "mc" else item.get("id")
        if rid is not None:
            if rid in seen:
                raise DataError(f"{path}: record {lineno}: duplicate id {rid!r}")
            seen.add(rid)
        out.append(item)
    if not out:
        raise DataError(f"{path}: no records")
    return out


def append_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Append finished records; a crash loses at most the batch being written."""
    with Path(path).open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    """Write all records to a temp file, then rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(
                    json.dumps(r.to_dict() if isinstance(r, MCQuestion) else r, ensure_ascii=False)
                )
                f.write("\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def whole_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file a job may have been killed while writing: a line that does
    not parse (a kill can only cut the last one) is left out."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


class KeyedLog:
    """Append-only JSONL of finished items keyed by "id": a job rerun into the same run directory
    skips what is done. A last line cut short by a kill is removed (that item is redone)."""

    def __init__(self, path: Path):
        self.path, self.done = path, {}
        if path.is_file():
            raw = path.read_bytes()
            # cut a line a kill left half-written: appending after it would spoil the next record
            if raw and not raw.endswith(b"\n"):
                os.truncate(path, raw.rfind(b"\n") + 1)
            self.done = {r["id"]: r for r in whole_records(path) if "id" in r}
        if self.done:
            log.info("resuming: %d finished items in %s", len(self.done), path)

    def append(self, records: list[dict]) -> None:
        if records:
            append_jsonl(self.path, records)
            self.done.update((r["id"], r) for r in records)
