"""Unified schema and JSONL files: bad input names the file, line or record."""

from __future__ import annotations

import json

import pytest

from citrus.data.schema import DataError, MCQuestion, load_records, read_jsonl, write_jsonl_atomic

GOOD = {
    "id": "q1",
    "benchmark": "demo",
    "question": "Which?",
    "options": {"A": "x", "B": "y"},
    "answer": "B",
}


def test_roundtrip(tmp_path):
    q = MCQuestion.from_dict({**GOOD, "context": "abstract", "metadata": {"year": 2020}})
    path = write_jsonl_atomic(tmp_path / "q.jsonl", [q])
    assert load_records(path, "mc") == [q]
    assert q.answer_text == "y"


@pytest.mark.parametrize(
    "change,message",
    [
        ({"answer": "C"}, "answer 'C' is not among options"),
        ({"options": {"A": "x"}}, "at least 2 options"),
        ({"options": {"A": "x", "C": "y"}}, "option letters must be"),
        ({"question": "  "}, "empty question"),
    ],
)
def test_invalid_question_names_the_record(change, message):
    with pytest.raises(DataError, match=message) as info:
        MCQuestion.from_dict({**GOOD, **change})
    assert "'q1'" in str(info.value)


def test_missing_field_is_named():
    record = dict(GOOD)
    del record["options"]
    with pytest.raises(DataError, match=r"missing field\(s\) \['options'\]"):
        MCQuestion.from_dict(record)


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(DataError, match=rf"{path}:2: bad JSON"):
        list(read_jsonl(path))


@pytest.mark.parametrize(
    "lines,kind,message",
    [
        ([], "mc", "no records"),
        ([GOOD, GOOD], "mc", "record 2: duplicate id 'q1'"),
        ([{**GOOD, "answer": "Z"}], "mc", "record 1:.*not among options"),
        (
            [{"id": "s1", "messages": [{"role": "user", "content": "hi"}]}],
            "sft",
            "last message must be",
        ),
        ([{"id": "s1", "messages": [{"role": "robot", "content": "hi"}]}], "sft", "role"),
        ([{"id": "s1"}], "sft", "'messages' must be a non-empty list"),
    ],
)
def test_load_records_rejects_bad_files(tmp_path, lines, kind, message):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(DataError, match=message) as info:
        load_records(path, kind)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "absent.jsonl", "mc")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    def records():
        yield GOOD
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(tmp_path / "out.jsonl", records())
    assert list(tmp_path.iterdir()) == []
