"""`citrus prepare`: materialise the training data and benchmark files a config points at."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from citrus.data import quickstart
from citrus.data.benchmarks import load_task
from citrus.data.schema import DataError, load_records

log = logging.getLogger(__name__)


def training_file(data_cfg: Any, data_dir: str | Path) -> Path:
    """The JSONL of training records (data.format) for the data stage, generated first when it is
    quickstart."""
    if data_cfg.path:
        path = Path(data_cfg.path)
        if not path.is_file():
            raise DataError(f"data.path: {path} does not exist (data={data_cfg.name})")
        return path
    if data_cfg.quickstart is not None:
        q = data_cfg.quickstart
        return quickstart.write_train_split(Path(data_dir) / "quickstart", q.seed, q.n_train, q.n_options, data_cfg.prompt,
                                            data_cfg.format)
    raise DataError(f"data={data_cfg.name}: set data.path (a JSONL of {data_cfg.format} records) or data.quickstart")


def run(cfg: Any, run: Any) -> dict[str, float]:
    train_path = training_file(cfg.data, cfg.paths.data_dir)
    n_train = len(load_records(train_path, cfg.data.format))
    run.record.add_input(train_path, f"data/{cfg.data.name}")
    log.info("training data %s: %d records -> %s", cfg.data.name, n_train, train_path)
    metrics = {f"data/{cfg.data.name}/records": n_train}
    for name, task in cfg.benchmark.tasks.items():
        loaded = load_task(name, task, cfg.benchmark, cfg.paths.data_dir)
        for path in loaded.files:
            run.record.add_input(path, f"benchmark/{name}")
        log.info("benchmark %s: %d questions (%d skipped) from %s", name, len(loaded.items), len(loaded.skipped), loaded.files[0])
        metrics[f"benchmark/{name}/questions"] = len(loaded.items)
    return metrics
