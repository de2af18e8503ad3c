"""Benchmarks: the original public files -> unified MCQuestions.

A task (conf/benchmark/task/*.yaml) names a loader and its original file, relative to
`benchmark.data_root` (a local copy, e.g. ../shared/benchmarks/citrus-repo) or, when no root is
given, fetched once from `benchmark.base_url` (or the task's own `url`) into the cache. Each
loader reads the format as published and converts one record at a time; a malformed record
raises an error naming the file and the record, or, with `benchmark.strict=false`, is skipped and
counted. The md5 of every file read goes in run.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from citrus.data import quickstart
from citrus.data.benchmark_records import careqa, medbullets, medmcqa, medqa, mmlu, mmlu_pro
from citrus.data.files import Raw, csv_rows, jsonl, pandas_columns, parquet, source_file, xlsx
from citrus.data.layouts import hub_file, load_rows, read_questions, to_mc_question
from citrus.data.schema import (
    DataError,
    MCQuestion,
    load_records,
    write_jsonl_atomic,
)
from citrus.plugins import is_import_path, lookup

log = logging.getLogger(__name__)


@dataclass
class LoadedTask:
    items: list[MCQuestion]
    files: list[Path]  # every file read (their md5s go in run.json)
    skipped: list[str] = field(default_factory=list)  # malformed records, when not strict


def _blank(raw: Any) -> bool:
    """An all-empty row (NaN / None / ""), as pandas exports leave behind: not a record."""
    values = raw.values() if isinstance(raw, dict) else raw if isinstance(raw, list) else [raw]
    return all(v is None or v == "" or (isinstance(v, float) and math.isnan(v)) for v in values)


def _convert(
    records: Raw,
    convert: Callable[[Any, str, int], MCQuestion],
    task: str,
    path: Path,
    strict: bool,
) -> LoadedTask:
    out = LoadedTask([], [path])
    for n, (where, raw) in enumerate(records):
        if _blank(raw):
            out.skipped.append(f"{path}: {where}: empty record")
            continue
        try:
            out.items.append(convert(raw, task, n))
        except (DataError, KeyError, ValueError, TypeError, IndexError, SyntaxError) as e:
            message = f"{path}: {where}: " + (
                f"missing field {e}" if isinstance(e, KeyError) else str(e)
            )
            if strict:
                raise DataError(message + " (benchmark.strict=false skips such records)") from None
            out.skipped.append(message)
    return out


def task_file(task: Any, name: str, bench: Any, data_dir: Path) -> Path:
    """The task's original file, local or fetched."""
    if not task.file:
        raise DataError(f"benchmark task {name!r}: set `file` (the original file)")
    return source_file(task.file, bench, data_dir, task.url)


def _single_file(reader: Callable[[Path], Raw], convert: Callable) -> Callable:
    def load(task: Any, name: str, bench: Any, data_dir: Path) -> LoadedTask:
        path = task_file(task, name, bench, data_dir)
        template = task.question_template
        if template:
            convert_row = lambda raw, t, n: with_template(convert(raw, t, n), raw, template)  # noqa: E731
        else:
            convert_row = convert
        return _convert(reader(path), convert_row, name, path, bench.strict)

    load.reads_rows = True  # type: ignore[attr-defined]  # question_template applies
    return load


def with_template(q: MCQuestion, raw: dict, template: str) -> MCQuestion:
    """The question with its stem rebuilt from the raw record: `{question}` is the stem, any
    other `{column}` the record's value (a missing column fails the record by name)."""
    values = {**raw, "question": q.question}
    stem = re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), template)
    return dataclasses.replace(q, question=stem)


def load_pubmedqa(task: Any, name: str, bench: Any, data_dir: Path) -> LoadedTask:
    """PQA-L restricted to the official split; the abstract is the context, options yes/no/maybe."""
    path = task_file(task, name, bench, data_dir)
    split_path = source_file(task.split_file, bench, data_dir) if task.split_file else None
    split = json.loads(split_path.read_text()) if split_path else None
    data = json.loads(path.read_text(encoding="utf-8"))
    ids = list(split) if split is not None else list(data)
    letters = {"yes": "A", "no": "B", "maybe": "C"}

    def convert(pmid: str, task_name: str, n: int) -> MCQuestion:
        raw = data[pmid]
        label = split[pmid] if split is not None else raw["final_decision"]
        return MCQuestion(
            f"{task_name}-{pmid}",
            task_name,
            raw["QUESTION"],
            {"A": "yes", "B": "no", "C": "maybe"},
            letters[label],
            context="\n".join(raw["CONTEXTS"]),  # one labelled section a line, as lm-eval
            metadata={"year": raw.get("YEAR")},
        )

    out = _convert(((f"id {i}", i) for i in ids), convert, name, path, bench.strict)
    out.files += [split_path] if split_path else []
    return out


def load_medmcqa(task: Any, name: str, bench: Any, data_dir: Path) -> LoadedTask:
    """The original dev.json (JSON lines, cop 1-4) or the hub's parquet copy (cop 0-3)."""
    path = task_file(task, name, bench, data_dir)
    zero_based = path.suffix == ".parquet"  # the hub's parquet counts options from 0
    reader = parquet(path) if zero_based else jsonl(path)
    return _convert(
        reader,
        lambda raw, t, n: medmcqa(raw, t, n, zero_based=zero_based),
        name,
        path,
        bench.strict,
    )


def load_quickstart(task: Any, name: str, bench: Any, data_dir: Path) -> LoadedTask:
    if task.limit is None:
        raise DataError(
            f"benchmark task {name!r}: the quickstart loader needs `limit` (how many to generate)"
        )
    path = (
        Path(data_dir)
        / "quickstart"
        / f"quickstart-{task.split}-seed{task.seed}-n{task.limit}.jsonl"
    )
    if not path.is_file():
        write_jsonl_atomic(path, quickstart.generate(task.split, task.limit, task.seed))
    return LoadedTask(load_records(path, "mc"), [path])


def load_unified(task: Any, name: str, bench: Any, data_dir: Path) -> LoadedTask:
    """A file in the unified schema (e.g. written by `citrus label`) or the original Citrus
    question pool's layout (Q, A, OP[, Q_open, complexity])."""
    path = task_file(task, name, bench, data_dir)
    return LoadedTask(read_questions(path, name), [path])


def load_hub(task: Any, name: str, bench: Any, data_dir: Path) -> LoadedTask:
    """A hub dataset read with `datasets` (task.dataset, task.file in it), or its local copy under
    benchmark.data_root; any layout citrus/data/layouts.py knows is mapped to the unified schema."""
    if bench.data_root:
        source = task_file(task, name, bench, data_dir)
    elif task.dataset:
        source = hub_file(task.dataset, task.file, task.revision)
    else:
        raise DataError(
            f"benchmark task {name!r}: loader hub needs `dataset` (a hub id) or benchmark.data_root"
        )
    rows = load_rows(source)
    return _convert(
        ((f"record {n + 1}", row) for n, row in enumerate(rows)),
        to_mc_question,
        name,
        source,
        bench.strict,
    )


LOADERS: dict[str, Callable[[Any, str, Any, Path], LoadedTask]] = {
    "medqa": _single_file(jsonl, medqa),
    "pubmedqa": load_pubmedqa,
    "medmcqa": load_medmcqa,
    "mmlu": _single_file(csv_rows, mmlu),
    "mmlu_pro": _single_file(jsonl, mmlu_pro),
    "medbullets": _single_file(pandas_columns, medbullets),
    "careqa": _single_file(jsonl, careqa),
    # the JMED sheet's layout: final_question / final_options / final_correct_answer
    "jmed": _single_file(xlsx, to_mc_question),
    "quickstart": load_quickstart,
    "unified": load_unified,
    "hub": load_hub,
}


def load_task(name: str, task: Any, bench: Any, data_dir: str | Path) -> LoadedTask:
    """Items of one task, limited (first N, or a seeded sample of N) by the task's own limit or,
    without one, the group's benchmark.limit. A process loads each task once: a pipeline's
    prepare and its evaluations after every stage share the parse."""
    if task.loader not in LOADERS and not is_import_path(task.loader):
        raise DataError(
            f"benchmark task {name!r}: unknown loader {task.loader!r}; one of {sorted(LOADERS)}, "
            "or an import path module:attribute"
        )
    loader = lookup(LOADERS, task.loader, f"benchmark.tasks.{name}.loader")
    if task.question_template and not getattr(loader, "reads_rows", False):
        raise DataError(
            f"benchmark task {name!r}: question_template needs a row-based loader, not "
            f"{task.loader!r}"
        )
    # what the parse depends on (the group's limit and sample apply after it)
    task_cfg = OmegaConf.to_container(task, resolve=True)
    parse = [name, task_cfg, bench.data_root, bench.base_url, bench.strict, str(data_dir)]
    key = json.dumps(parse, sort_keys=True)
    if key not in _LOADED:
        _LOADED[key] = loader(task, name, bench, Path(data_dir))
        for message in _LOADED[key].skipped:
            log.warning("skipped %s", message)
    loaded = dataclasses.replace(_LOADED[key])
    if not task.context:  # the protocol asks without it (the original Citrus: question only)
        loaded.items = [dataclasses.replace(q, context=None) for q in loaded.items]
    limit, sample = (task.limit, task.sample) if task.limit else (bench.limit, bench.sample)
    if limit and len(loaded.items) > limit:
        if sample:
            picked = sorted(random.Random(task.seed).sample(range(len(loaded.items)), limit))
            loaded.items = [loaded.items[i] for i in picked]
        else:
            loaded.items = loaded.items[:limit]
    return loaded


_LOADED: dict[str, LoadedTask] = {}  # load_task's parses, by task and benchmark settings
