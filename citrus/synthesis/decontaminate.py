"""`citrus decontaminate`: word n-gram overlap between training data and every benchmark test set.

A training record is flagged when it shares at least one n-gram (synthesis.decontaminate_ngram
words, 13 by default as in GPT-3's and OLMo's checks) with a question of benchmark=; the
report names each flagged record and the benchmark questions it overlaps, and clean.jsonl keeps
the rest (`data.path=<run>/clean.jsonl`).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from citrus.data.benchmarks import load_task
from citrus.data.prepare import training_file
from citrus.data.schema import load_records, write_jsonl_atomic
from citrus.result import JobResult

WORD = re.compile(r"[a-z0-9]+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def record_text(record: dict) -> str:
    """What a training record shows the model: every message, and the replies of a pair."""
    parts = [m["content"] for m in record.get("messages", [])]
    return "\n".join([*parts, record.get("chosen", ""), record.get("rejected", "")])


def index_benchmarks(tasks: Iterable[tuple[str, list]], n: int) -> dict[tuple[str, ...], set[str]]:
    """n-gram -> the "task/id" of every benchmark question (with context and options) holding it."""
    index: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for name, items in tasks:
        for q in items:
            text = "\n".join([q.context or "", q.question, *q.options.values()])
            for gram in ngrams(text, n):
                index[gram].add(f"{name}/{q.id}")
    return index


def overlaps(record: dict, index: dict, n: int) -> set[str]:
    return set().union(*(index.get(g, ()) for g in ngrams(record_text(record), n)))


def run(cfg: Any, run: Any) -> JobResult:
    n = cfg.synthesis.decontaminate_ngram
    path = training_file(cfg.data, cfg.paths.data_dir)
    run.record.add_input(path, f"data/{cfg.data.name}")
    records = load_records(path, cfg.data.format)
    loaded = []
    for name, task in cfg.benchmark.tasks.items():
        got = load_task(name, task, cfg.benchmark, cfg.paths.data_dir)
        for p in got.files:
            run.record.add_input(p, f"benchmark/{name}")
        loaded.append((name, got.items))
    index = index_benchmarks(loaded, n)
    flagged = {
        r.get("id", str(i)): sorted(hits)
        for i, r in enumerate(records)
        if (hits := overlaps(r, index, n))
    }
    clean = [r for i, r in enumerate(records) if r.get("id", str(i)) not in flagged]
    per_task = {
        name: sum(any(h.startswith(f"{name}/") for h in hits) for hits in flagged.values())
        for name, _ in loaded
    }
    report = {
        "data": str(path),
        "ngram": n,
        "records": len(records),
        "flagged": len(flagged),
        "per_benchmark": per_task,
        "overlaps": flagged,
    }
    (run.dir / "report.json").write_text(json.dumps(report, indent=2))
    metrics = {
        "decontaminate/records": len(records),
        "decontaminate/flagged": len(flagged),
        **{f"decontaminate/{k}": v for k, v in per_task.items()},
    }
    clean_path = write_jsonl_atomic(run.dir / "clean.jsonl", clean)
    return JobResult(metrics, {"clean": clean_path, "report": run.dir / "report.json"})
