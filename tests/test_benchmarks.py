"""Every benchmark loader on the real public files (../shared/benchmarks), their counts and
answers, malformed records, and the download path through a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, compose_config, needs_files

from citrus.data.benchmarks import load_task
from citrus.data.schema import DataError
from citrus.record import md5sum

# verified record counts (../shared/benchmarks/SOURCES.md) and option counts
COUNTS = {
    "medqa": (1273, {4}),
    "pubmedqa": (500, {3}),
    "mmlu_anatomy": (135, {4}),
    "mmlu_clinical_knowledge": (265, {4}),
    "mmlu_college_biology": (144, {4}),
    "mmlu_college_medicine": (173, {4}),
    "mmlu_medical_genetics": (100, {4}),
    "mmlu_professional_medicine": (272, {4}),
    "mmlu_pro_biology": (717, set(range(3, 11))),
    "mmlu_pro_health": (818, set(range(3, 11))),
    "medbullets_op4": (308, {4}),
    "medbullets_op5": (308, {5}),
    "careqa": (5621, {4}),  # the file's 5623 rows hold 2 all-NaN ones
    "jmed": (1094, set(range(2, 11))),
}


def bench_cfg(group: str, *overrides: str):
    return compose_config(
        "evaluate", [f"benchmark={group}", f"benchmark.data_root={ROOT}", *overrides]
    ).benchmark


@needs_files
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_loader_reads_every_record_of_the_real_file(name, tmp_path):
    bench = bench_cfg(name)
    loaded = load_task(name, bench.tasks[name], bench, tmp_path)
    n, option_counts = COUNTS[name]
    assert len(loaded.items) == n
    assert all(s.endswith("empty record") for s in loaded.skipped) and len(loaded.items) + len(
        loaded.skipped
    ) == {"careqa": 5623}.get(name, n)
    assert len({q.id for q in loaded.items}) == n, "ids must be unique"
    assert {len(q.options) for q in loaded.items} <= option_counts
    assert all(q.benchmark == name and q.answer in q.options for q in loaded.items)
    assert all(p.is_file() and str(p).startswith(str(ROOT)) for p in loaded.files)


@needs_files
def test_pubmedqa_uses_the_official_test_split_with_abstracts(tmp_path):
    bench = bench_cfg("pubmedqa")
    loaded = load_task("pubmedqa", bench.tasks.pubmedqa, bench, tmp_path)
    labels = Counter(q.options[q.answer] for q in loaded.items)
    assert labels == {"yes": 276, "no": 169, "maybe": 55}
    assert all(q.context and len(q.context) > 100 for q in loaded.items)
    assert [p.name for p in loaded.files] == ["ori_pqal.json", "test_ground_truth.json"]


@needs_files
def test_answers_match_the_published_answer_text(tmp_path):
    bench = bench_cfg("medqa")
    first = load_task("medqa", bench.tasks.medqa, bench, tmp_path).items[0]
    raw = json.loads((ROOT / bench.tasks.medqa.file).read_text().splitlines()[0])
    assert first.answer == raw["answer_idx"] and first.answer_text == raw["answer"]
    bench = bench_cfg("careqa")
    first = load_task("careqa", bench.tasks.careqa, bench, tmp_path).items[0]
    raw = json.loads((ROOT / bench.tasks.careqa.file).read_text().splitlines()[0])
    assert first.answer_text == raw[f"op{int(float(raw['cop']))}"]


@needs_files
def test_groups_compose_from_the_single_tasks(tmp_path):
    paper = bench_cfg("citrus_paper")
    assert set(COUNTS) | {"medmcqa"} == set(paper.tasks)
    mmlu = bench_cfg("mmlu_medical")
    assert set(mmlu.tasks) == {
        k for k in COUNTS if k.startswith("mmlu_") and not k.startswith("mmlu_pro_")
    }
    quick = bench_cfg("quick")
    # the group's limit and sample apply to every task (a task's own limit would win)
    assert set(quick.tasks) == set(paper.tasks) and quick.limit == 20 and quick.sample
    assert all(t.limit is None for t in quick.tasks.values())
    a = load_task("careqa", quick.tasks.careqa, quick, tmp_path).items
    b = load_task("careqa", quick.tasks.careqa, quick, tmp_path).items
    assert len(a) == 20 and [q.id for q in a] == [q.id for q in b]  # a fixed sample
    full = load_task("careqa", paper.tasks.careqa, paper, tmp_path).items
    assert [q.id for q in a] != [q.id for q in full[:20]]  # sampled, not the head


def _write_bad_copies(root: Path) -> None:
    (root / "medqa").mkdir(parents=True)
    good = {
        "question": "Q?",
        "options": {"A": "a", "B": "b", "C": "c", "D": "d"},
        "answer_idx": "B",
    }
    lines = [
        good,
        {**good, "answer_idx": "E"},
        {k: v for k, v in good.items() if k != "options"},
        good,
    ]
    (root / "medqa" / "test.jsonl").write_text(
        "\n".join(json.dumps(r) for r in lines) + "\n{broken\n"
    )


@pytest.mark.parametrize(
    "bad_line,message",
    [
        (2, r"record 2: question 'bad-00001' \(bad\): answer 'E' is not among options"),
        (3, "record 2: missing field 'options'"),
    ],
)
def test_malformed_records_fail_naming_file_and_record(tmp_path, bad_line, message):
    _write_bad_copies(tmp_path)
    path = tmp_path / "medqa" / "test.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(
        lines[0] + "\n" + lines[bad_line - 1] + "\n"
    )  # one good record, then the bad one
    bench = bench_cfg(
        "medqa", f"benchmark.data_root={tmp_path}", "benchmark.tasks.medqa.file=medqa/test.jsonl"
    )
    with pytest.raises(DataError, match=message) as info:
        load_task("bad", bench.tasks.medqa, bench, tmp_path / "cache")
    assert str(path) in str(info.value) and "benchmark.strict=false" in str(info.value)


def test_non_strict_skips_and_counts_bad_records_but_not_bad_json(tmp_path):
    _write_bad_copies(tmp_path)
    bench = bench_cfg(
        "medqa",
        f"benchmark.data_root={tmp_path}",
        "benchmark.tasks.medqa.file=medqa/test.jsonl",
        "benchmark.strict=false",
    )
    path = tmp_path / "medqa" / "test.jsonl"
    with pytest.raises(DataError, match=rf"{path}:5: bad JSON"):  # a broken file is never half-read
        load_task("bad", bench.tasks.medqa, bench, tmp_path / "cache")
    path.write_text("\n".join(path.read_text().splitlines()[:4]) + "\n")
    loaded = load_task("bad", bench.tasks.medqa, bench, tmp_path / "cache")
    assert len(loaded.items) == 2 and len(loaded.skipped) == 2
    assert "record 2" in loaded.skipped[0] and "record 3" in loaded.skipped[1]


def test_missing_local_file_is_named(tmp_path):
    bench = bench_cfg("medqa", f"benchmark.data_root={tmp_path}")
    with pytest.raises(
        DataError,
        match=rf"{tmp_path}/download_files/medqa/phrases_no_exclude_test.jsonl: no such file",
    ):
        load_task("medqa", bench.tasks.medqa, bench, tmp_path / "cache")


def test_medmcqa_original_json_and_hub_parquet(tmp_path):
    import pandas as pd

    rows = [
        {
            "id": f"m{i}",
            "question": f"Q{i}?",
            "opa": "a",
            "opb": "b",
            "opc": "c",
            "opd": "d",
            "cop": i % 4,
            "subject_name": "Anatomy",
        }
        for i in range(8)
    ]
    (tmp_path / "medmcqa").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "medmcqa" / "validation.parquet")
    (tmp_path / "medmcqa" / "dev.json").write_text(
        "".join(json.dumps({**r, "cop": r["cop"] + 1}) + "\n" for r in rows)
    )
    answers = []
    for file in ("medmcqa/validation.parquet", "medmcqa/dev.json"):
        bench = bench_cfg(
            "medmcqa", f"benchmark.data_root={tmp_path}", f"benchmark.tasks.medmcqa.file={file}"
        )
        answers.append(
            [
                q.answer
                for q in load_task("medmcqa", bench.tasks.medmcqa, bench, tmp_path / "c").items
            ]
        )
    assert answers[0] == answers[1] == list("ABCDABCD")


@pytest.fixture
def file_server():
    """A real HTTP server on 127.0.0.1 serving the benchmark files."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(ROOT))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@needs_files
def test_download_without_a_local_root_caches_the_same_file(file_server, tmp_path):
    bench = compose_config(
        "evaluate", ["benchmark=pubmedqa", f"benchmark.base_url={file_server}"]
    ).benchmark
    loaded = load_task("pubmedqa", bench.tasks.pubmedqa, bench, tmp_path)
    assert len(loaded.items) == 500
    assert [p.parent for p in loaded.files] == [
        tmp_path / "benchmarks" / "download_files" / "pubmedqa"
    ] * 2
    assert md5sum(loaded.files[0]) == md5sum(ROOT / bench.tasks.pubmedqa.file)
    os.utime(loaded.files[0], (0, 0))
    load_task("pubmedqa", bench.tasks.pubmedqa, bench, tmp_path)  # second time: from the cache
    assert os.path.getmtime(loaded.files[0]) == 0


def test_unreachable_source_is_a_clear_error(tmp_path):
    bench = compose_config(
        "evaluate", ["benchmark=medqa", "benchmark.base_url=http://127.0.0.1:9"]
    ).benchmark
    with pytest.raises(
        DataError,
        match="could not download http://127.0.0.1:9/download_files/medqa.*set benchmark.data_root",
    ):
        load_task("medqa", bench.tasks.medqa, bench, tmp_path)
    assert not list((tmp_path / "benchmarks").rglob("*.part"))


@pytest.mark.parametrize("group", ["pubmedqa", "medmcqa", "medqa"])
def test_task_without_a_file_is_named(group, tmp_path):
    bench = compose_config(
        "evaluate", [f"benchmark={group}", f"benchmark.tasks.{group}.file=null"]
    ).benchmark
    with pytest.raises(DataError, match=f"benchmark task '{group}': set `file`"):
        load_task(group, bench.tasks[group], bench, tmp_path)
