"""`citrus prepare`: materialise the training data and benchmark files a config points at."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

from citrus.data import quickstart
from citrus.data.benchmarks import load_task
from citrus.data.layouts import TRAINING_CONVERTERS, hub_file, load_rows
from citrus.data.schema import DataError, load_records, write_jsonl_atomic
from citrus.result import JobResult

log = logging.getLogger(__name__)


def converted_file(data_cfg: Any, data_dir: str | Path) -> Path:
    """Released data (data.hub's file, or data.path holding a local copy of it) read with
    `datasets` and converted record by record into the training schema; the file is named by its
    source."""
    hub = data_cfg.hub
    if data_cfg.path:
        source = Path(data_cfg.path)
        if not source.is_file():
            raise DataError(
                f"data.path: {source} does not exist "
                f"(data={data_cfg.name}, a local copy of {hub.repo})"
            )
    else:
        source = hub_file(hub.repo, hub.data_files, hub.revision)
    rows = load_rows(source)
    key = f"{source.resolve()}:{source.stat().st_size}:{source.stat().st_mtime_ns}"
    convert = TRAINING_CONVERTERS[data_cfg.format]
    records = []
    for n, row in enumerate(rows):
        try:
            records.append(convert(row, default_id=f"{data_cfg.name}-{n}"))
        except DataError as e:
            raise DataError(
                f"{source}: record {n + 1}: {e} "
                f"(data={data_cfg.name}, data.format={data_cfg.format})"
            ) from None
    digest = hashlib.md5(key.encode()).hexdigest()[:10]
    path = write_jsonl_atomic(
        Path(data_dir) / "converted" / f"{data_cfg.name}-{digest}.jsonl", records
    )
    log.info("converted %d %s records of %s -> %s", len(records), data_cfg.format, source, path)
    return path


def drawn(records: list[dict], n: int, rng: random.Random) -> list[dict]:
    """n records: whole copies of all of them, then a seeded sample of the rest."""
    copies, rest = divmod(n, len(records))
    return records * copies + rng.sample(records, rest)


def mixed_file(data_cfg: Any, data_dir: str | Path) -> Path:
    """data.mixture's sources, each converted from its layout and drawn by weight or count,
    shuffled together into one file named by the sources' md5s, counts and seed."""
    from citrus.record import md5sum

    convert = TRAINING_CONVERTERS[data_cfg.format]
    mixed, stamp = [], [data_cfg.format, data_cfg.mixture_seed]
    for i, src in enumerate(data_cfg.mixture):
        where = f"data.mixture[{i}] (data={data_cfg.name})"
        path = Path(src.path)
        if not path.is_file():
            raise DataError(f"{where}: {path} does not exist")
        if (src.weight is None) == (src.count is None):
            raise DataError(f"{where}: set one of weight and count")
        records = []
        for n, row in enumerate(load_rows(path)):
            try:
                record = convert(row, default_id=f"{n}")
            except DataError as e:
                raise DataError(f"{path}: record {n + 1}: {e} ({where})") from None
            records.append({**record, "id": f"{i}/{record.get('id', n)}"})
        if not records:
            raise DataError(f"{where}: {path} holds no records")
        want = src.count if src.count is not None else round(src.weight * len(records))
        if want < 0:
            raise DataError(f"{where}: a negative share")
        rng = random.Random(f"{data_cfg.mixture_seed}/{i}")
        mixed += [dict(r) for r in drawn(records, want, rng)]  # a record drawn twice: 2 dicts
        stamp.append([md5sum(path), want])
    random.Random(data_cfg.mixture_seed).shuffle(mixed)
    for n, record in enumerate(mixed):  # a record drawn twice is two examples
        record["id"] = f"{record['id']}#{n}"
    digest = hashlib.md5(json.dumps(stamp).encode()).hexdigest()[:10]
    path = Path(data_dir) / "mixtures" / f"{data_cfg.name}-{digest}.jsonl"
    if not path.is_file():
        write_jsonl_atomic(path, mixed)
        log.info("mixed %s -> %s (%d records)", stamp[2:], path, len(mixed))
    return path


def training_file(data_cfg: Any, data_dir: str | Path) -> Path:
    """The JSONL of training records (data.format) for the data stage: mixed from several
    sources, converted first when it is released data in its own layout, generated first when
    it is quickstart."""
    if data_cfg.mixture:
        return mixed_file(data_cfg, data_dir)
    if data_cfg.hub is not None:
        return converted_file(data_cfg, data_dir)
    if data_cfg.path:
        path = Path(data_cfg.path)
        if not path.is_file():
            raise DataError(f"data.path: {path} does not exist (data={data_cfg.name})")
        return path
    if data_cfg.quickstart is not None:
        q = data_cfg.quickstart
        return quickstart.write_train_split(
            Path(data_dir) / "quickstart",
            q.seed,
            q.n_train,
            q.n_options,
            data_cfg.prompt,
            data_cfg.format,
        )
    raise DataError(
        f"data={data_cfg.name}: set data.path (a JSONL of {data_cfg.format} records), "
        "data.hub or data.quickstart"
    )


def run(cfg: Any, run: Any) -> JobResult:
    train_path = training_file(cfg.data, cfg.paths.data_dir)
    n_train = len(load_records(train_path, cfg.data.format))
    run.record.add_input(train_path, f"data/{cfg.data.name}")
    log.info("training data %s: %d records -> %s", cfg.data.name, n_train, train_path)
    metrics = {f"data/{cfg.data.name}/records": n_train}
    for name, task in cfg.benchmark.tasks.items():
        loaded = load_task(name, task, cfg.benchmark, cfg.paths.data_dir)
        for path in loaded.files:
            run.record.add_input(path, f"benchmark/{name}")
        log.info(
            "benchmark %s: %d questions (%d skipped) from %s",
            name,
            len(loaded.items),
            len(loaded.skipped),
            loaded.files[0],
        )
        metrics[f"benchmark/{name}/questions"] = len(loaded.items)
    return JobResult(metrics, {"train": train_path})
