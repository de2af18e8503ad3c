"""Released data in its own layout -> citrus's schemas: the Citrus repo's real training examples and
unified files through the data configs (data=citrus_s3 data.path=..., benchmark=jmed_hub), every
known layout, and errors that name the file, the record and the keys."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT, compose_config, needs_files, run_cli

from citrus.data.benchmarks import load_task
from citrus.data.layouts import hub_file, to_mc_question, to_preference_record, to_sft_record
from citrus.data.prepare import training_file
from citrus.data.schema import DataError, read_jsonl

EXAMPLES = ROOT / "model_train" / "example_data_for_train"


@needs_files
def test_citrus_s3_config_converts_a_local_copy_in_the_citrus_layout(tmp_path):
    source = EXAMPLES / "sft_data.jsonl"  # the Citrus repo's SFT example: {"input", "target"}
    cfg = compose_config("train", ["data=citrus_s3", f"data.path={source}"])
    path = training_file(cfg.data, tmp_path)
    (raw,) = read_jsonl(source)
    (converted,) = read_jsonl(path)
    assert converted == {
        "id": "citrus_s3-0",
        "messages": [
            {"role": "user", "content": raw["input"]},
            {"role": "assistant", "content": raw["target"]},
        ],
    }
    assert path.parent == tmp_path / "converted"
    assert training_file(cfg.data, tmp_path) == path  # same source, same file


@needs_files
def test_citrus_dpo_example_converts_to_a_preference_record(tmp_path):
    source = (
        EXAMPLES / "dpo_data.jsonl"
    )  # {"chosen": [user, assistant], "rejected": [user, assistant]}
    cfg = compose_config(
        "train",
        ["data=citrus_s3", f"data.path={source}", "data.format=preference", "algorithm=cpo"],
    )
    (raw,) = read_jsonl(source)
    (record,) = read_jsonl(training_file(cfg.data, tmp_path))
    assert record["messages"] == raw["chosen"][:-1] == raw["rejected"][:-1]
    assert (record["chosen"], record["rejected"]) == (
        raw["chosen"][-1]["content"],
        raw["rejected"][-1]["content"],
    )


@needs_files
def test_prepare_job_reads_released_data_through_the_config(tmp_path):
    result = run_cli(
        "prepare",
        "data=citrus_s3",
        f"data.path={EXAMPLES / 'sft_data.jsonl'}",
        "benchmark=quickstart",
        "logger=none",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["metrics"]["data/citrus_s3/records"] == 1


SFT_CASES = {
    "messages": {
        "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "R"}]
    },
    "sharegpt": {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "R"}]},
    "input_target": {"input": "Q", "target": "R"},
    "alpaca": {"instruction": "Q", "input": "", "output": "R"},
    "prompt_completion": {"prompt": "Q", "completion": "R"},
    "prompt_response": {"prompt": [{"role": "user", "content": "Q"}], "response": "R"},
}


@pytest.mark.parametrize("case", SFT_CASES)
def test_every_sft_layout_gives_the_same_chat_record(case):
    record = to_sft_record(SFT_CASES[case], default_id="x-0")
    assert record == {
        "id": "x-0",
        "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "R"}],
    }


def test_system_prompt_and_alpaca_input_are_kept():
    record = to_sft_record(
        {"id": 7, "system": "S", "instruction": "Q", "input": "ctx", "output": "R"}, default_id="x"
    )
    assert record["id"] == "7"
    assert record["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q\n\nctx"},
        {"role": "assistant", "content": "R"},
    ]


def test_preference_with_a_prompt_and_two_replies():
    record = to_preference_record(
        {"prompt": "Q", "chosen": "good", "rejected": "bad"}, default_id="p-0"
    )
    assert record == {
        "id": "p-0",
        "messages": [{"role": "user", "content": "Q"}],
        "chosen": "good",
        "rejected": "bad",
    }


@pytest.mark.parametrize(
    "raw,error",
    [
        ({"question": "Q", "reply": "R"}, r"no known layout for keys \['question', 'reply'\]"),
        ({"input": "Q", "target": ""}, r"input\+target layout: .*non-empty assistant reply"),
        (
            {"conversations": [{"from": "doctor", "value": "Q"}]},
            r"unknown ShareGPT speaker\(s\) \['doctor'\]",
        ),
        ({"messages": "Q"}, r"expected a list of messages"),
    ],
)
def test_bad_sft_record_says_what_is_wrong(raw, error):
    with pytest.raises(DataError, match=error):
        to_sft_record(raw, default_id="x")


@pytest.mark.parametrize(
    "raw,error",
    [
        ({"prompt": "Q", "chosen": "R"}, "needs 'chosen' and 'rejected'"),
        ({"prompt": "Q", "chosen": "R", "rejected": "R"}, "chosen and rejected are the same reply"),
        (
            {
                "chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "R"}],
                "rejected": [
                    {"role": "user", "content": "B"},
                    {"role": "assistant", "content": "S"},
                ],
            },
            "different prompts",
        ),
        (
            {"chosen": [{"role": "user", "content": "Q"}], "rejected": "S"},
            "chosen: the conversation must end with the assistant",
        ),
        ({"chosen": "R", "rejected": "S"}, "no prompt"),
    ],
)
def test_bad_preference_record_says_what_is_wrong(raw, error):
    with pytest.raises(DataError, match=error):
        to_preference_record(raw, default_id="x")


def test_bad_record_in_a_released_file_names_file_and_record(tmp_path):
    source = tmp_path / "release.jsonl"
    source.write_text('{"input": "Q", "target": "R"}\n{"input": "Q2", "answer": "R2"}\n')
    cfg = compose_config("train", ["data=citrus_s3", f"data.path={source}"])
    with pytest.raises(
        DataError,
        match=re.escape(f"{source}: record 2: no known layout for keys ['answer', 'input']"),
    ):
        training_file(cfg.data, tmp_path / "data")
    assert not (tmp_path / "data" / "converted").exists()  # nothing half-converted left behind


def test_missing_local_copy_is_named(tmp_path):
    cfg = compose_config("train", ["data=citrus_s3", f"data.path={tmp_path / 'nope.jsonl'}"])
    with pytest.raises(
        DataError,
        match=r"nope.jsonl does not exist \(data=citrus_s3, a local copy of jdh-algo/Citrus_S3\)",
    ):
        training_file(cfg.data, tmp_path)


def test_hub_dataset_unreachable_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(
        DataError, match="jdh-algo/Citrus_S3/Citrus_S3.jsonl@main: could not be downloaded"
    ):
        hub_file("jdh-algo/Citrus_S3", "Citrus_S3.jsonl")


# ---------------------------------------------------------------- multiple-choice layouts


@needs_files
def test_jmed_hub_benchmark_reads_the_citrus_unified_layout_offline(tmp_path):
    # benchmark=jmed_hub with a local root: any file in a known layout; here the Citrus repo's
    # unified MedQA file ({"id", "Q", "A", "OP": "[{'op_idx': ...}]"}), a real release layout
    cfg = compose_config(
        "evaluate",
        [
            "benchmark=jmed_hub",
            f"benchmark.data_root={ROOT}",
            "benchmark.tasks.jmed_hub.file=origin_files/origin_files_w_data_label/medqa_train_small.jsonl",
        ],
    )
    loaded = load_task("jmed_hub", cfg.benchmark.tasks.jmed_hub, cfg.benchmark, tmp_path)
    raws = list(
        read_jsonl(ROOT / "origin_files" / "origin_files_w_data_label" / "medqa_train_small.jsonl")
    )
    assert len(loaded.items) == len(raws) == 50
    for item, raw in zip(loaded.items, raws):
        assert (
            item.id == f"jmed_hub-{raw['id']}"
            and item.question == raw["Q"]
            and item.answer == raw["A"]
        )
        assert (
            list(item.options) == ["A", "B", "C", "D", "E"][: len(item.options)]
            and len(item.options) >= 4
        )


@needs_files
def test_the_jmed_sheet_layout_maps_every_row_of_the_xlsx(tmp_path):
    # benchmark=jmed reads the sheet through the jmed_sheet layout; check it against the raw cells
    import ast

    import pandas as pd

    cfg = compose_config("evaluate", ["benchmark=jmed", f"benchmark.data_root={ROOT}"])
    loaded = load_task("jmed", cfg.benchmark.tasks.jmed, cfg.benchmark, tmp_path)
    rows = pd.read_excel(ROOT / cfg.benchmark.tasks.jmed.file).to_dict("records")
    expected = [
        (
            f"jmed-{r['diagId']}",
            r["final_question"],
            dict(sorted(json.loads(r["final_options"])["options"].items())),
            ast.literal_eval(r["final_correct_answer"])[0],
        )
        for r in rows
    ]
    assert [(q.id, q.question, q.options, q.answer) for q in loaded.items] == expected
    assert [to_mc_question(row, "jmed", n).id for n, row in enumerate(rows[:3])] == [
        e[0] for e in expected[:3]
    ]


@needs_files
def test_a_file_without_options_fails_naming_file_and_record(tmp_path):
    cfg = compose_config(
        "evaluate",
        [
            "benchmark=jmed_hub",
            f"benchmark.data_root={ROOT}",
            "benchmark.tasks.jmed_hub.file=origin_files/origin_files/jmed.jsonl",
        ],
    )
    with pytest.raises(DataError, match=r"origin_files/jmed.jsonl: record 1: no options"):
        load_task("jmed_hub", cfg.benchmark.tasks.jmed_hub, cfg.benchmark, tmp_path)


@pytest.mark.parametrize(
    "raw,expected",
    [
        (
            {"id": 1, "question": "Q", "options": {"B": "y", "A": "x"}, "answer": "B"},
            ({"A": "x", "B": "y"}, "B"),
        ),
        (
            {"question": "Q", "choices": ["x", "y", "z"], "answer": 2},
            ({"A": "x", "B": "y", "C": "z"}, "C"),
        ),
        ({"question": "Q", "options": ["x", "y"], "answer": "y"}, ({"A": "x", "B": "y"}, "B")),
        ({"Q": "Q", "OP": '["x", "y"]', "A": "['A']"}, ({"A": "x", "B": "y"}, "A")),
    ],
)
def test_mc_layouts(raw, expected):
    q = to_mc_question(raw, "t", 0)
    assert (q.options, q.answer) == expected


@pytest.mark.parametrize(
    "raw,error",
    [
        (
            {"question": "Q", "options": ["x", "y"], "answer": "C"},
            r"answer 'C' is not among options \['A', 'B'\]",
        ),
        (
            {"question": "Q", "options": ["x", "y"], "answer": ["A", "B"]},
            "expected one correct option",
        ),
        ({"question": "Q", "answer": "A"}, r"no known layout for keys \['answer', 'question'\]"),
    ],
)
def test_bad_mc_record_says_what_is_wrong(raw, error):
    with pytest.raises(DataError, match=error):
        to_mc_question(raw, "t", 0)
