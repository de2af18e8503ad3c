"""Benchmark tasks -> unified MCQuestions, each read from a file whose md5 goes in run.json.

A loader turns one task spec (conf/benchmark/*.yaml `tasks:` entry) into the path of a JSONL
file in the unified schema, writing it first when it has to be generated or converted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from citrus.data import quickstart
from citrus.data.schema import MCQuestion, load_records, write_jsonl_atomic


def quickstart_file(task: Any, data_dir: Path) -> Path:
    if task.limit is None:
        raise ValueError(f"benchmark task {task.name!r}: the quickstart loader needs `limit` (how many to generate)")
    path = data_dir / "quickstart" / f"quickstart-{task.split}-seed{task.seed}-n{task.limit}.jsonl"
    if not path.is_file():
        write_jsonl_atomic(path, quickstart.generate(task.split, task.limit, task.seed))
    return path


def jsonl_file(task: Any, data_dir: Path) -> Path:
    """A file already in the unified schema (e.g. written by `citrus label`)."""
    if not task.path:
        raise ValueError(f"benchmark task {task.name!r}: the jsonl loader needs `path`")
    return Path(task.path)


LOADERS: dict[str, Callable[[Any, Path], Path]] = {
    "quickstart": quickstart_file,
    "jsonl": jsonl_file,
}


def load_task(task: Any, data_dir: str | Path) -> tuple[list[MCQuestion], Path]:
    if task.loader not in LOADERS:
        raise ValueError(f"benchmark task {task.name!r}: unknown loader {task.loader!r}; one of {sorted(LOADERS)}")
    path = LOADERS[task.loader](task, Path(data_dir))
    items = load_records(path, "mc")
    return (items[: task.limit] if task.limit else items), path
