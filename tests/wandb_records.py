"""Read back an offline W&B run file (`run-<id>.wandb`) as W&B writes it, for the tests.

wandb 0.31 has no Python reader of its own any more (wandb-core writes the file), so this is the
documented format read with wandb's own protobuf: a 7-byte header (":W&B", magic 0xBEE1, version),
then LevelDB-log blocks of 32 KiB holding records (crc32, length, type: full / first / middle /
last) whose payloads are `wandb_internal_pb2.Record` messages.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path}: not a W&B run file"
    pos, payload = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        assert zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF == checksum, f"{path}: bad crc"
        pos += HEADER + length
        payload += chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(payload)
            payload = b""
            yield record


def read_run(path: Path) -> dict[str, Any]:
    """The run's history rows (key -> value), summary, metric definitions, artifacts, and the
    run record (group, tags, id)."""
    out: dict[str, Any] = {
        "history": [],
        "summary": {},
        "metrics": [],
        "artifacts": [],
        "run": None,
    }
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {
                item.nested_key[0] if item.nested_key else item.key: json.loads(item.value_json)
                for item in record.history.item
            }
            out["history"].append(row)
        elif kind == "summary":
            for item in record.summary.update:
                key = item.nested_key[0] if item.nested_key else item.key
                out["summary"][key] = json.loads(item.value_json)
        elif kind == "metric":
            out["metrics"].append(record.metric)
        elif kind == "artifact":
            out["artifacts"].append(record.artifact)
        elif kind == "run":
            out["run"] = record.run
    return out


def offline_run(run_dir: Path) -> dict[str, Any]:
    """read_run of the one offline W&B run under run_dir/wandb."""
    found = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(found) == 1, f"{run_dir}: {len(found)} offline W&B runs"
    return read_run(found[0])
