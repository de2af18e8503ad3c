"""Where benchmark files come from (a local copy or a one-time download into the cache) and
readers of the formats they are published in, each yielding (where in the file, raw record)."""

from __future__ import annotations

import csv
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from citrus.data.schema import DataError, read_jsonl

log = logging.getLogger(__name__)

Raw = Iterator[tuple[str, Any]]  # (where in the file, raw record)


# ---------------------------------------------------------------- where the files come from


def download(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest` through a temporary file: an interrupted download leaves nothing."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:
        raise DataError(
            f"could not download {url} ({e}); set benchmark.data_root to a local copy"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def source_file(rel: str, bench: Any, data_dir: str | Path, url: str | None = None) -> Path:
    if bench.data_root:
        path = Path(bench.data_root) / rel
        if not path.is_file():
            raise DataError(f"{path}: no such file (benchmark.data_root={bench.data_root})")
        return path
    cached = Path(data_dir) / "benchmarks" / rel
    return (
        cached
        if cached.is_file()
        else download(url or f"{bench.base_url.rstrip('/')}/{rel}", cached)
    )


# ---------------------------------------------------------------- readers of the published formats


def jsonl(path: Path) -> Raw:
    for i, record in enumerate(read_jsonl(path), 1):
        yield f"record {i}", record


def csv_rows(path: Path) -> Raw:
    with path.open(newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f), 1):
            yield f"row {i}", row


def pandas_columns(path: Path) -> Raw:
    """A DataFrame saved with to_json(): {column: {row: value}}."""
    columns = json.loads(path.read_text(encoding="utf-8"))
    for row in next(iter(columns.values())):
        yield f"row {row}", {col: values.get(row) for col, values in columns.items()}


def xlsx(path: Path) -> Raw:
    import openpyxl

    sheet = openpyxl.load_workbook(path, read_only=True).worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    header = next(rows)
    for i, row in enumerate(rows, 2):
        yield f"sheet row {i}", dict(zip(header, row))


def parquet(path: Path) -> Raw:
    import pandas as pd

    for i, record in enumerate(pd.read_parquet(path).to_dict("records"), 1):
        yield f"row {i}", record
