"""`citrus evaluate`: ask every question of a benchmark group, extract answers, score them.

Writes, per run directory:
    predictions.jsonl   one line per question: prompt, raw response, extracted letter, rule, gold
                        (appended batch by batch, so a crash keeps what was finished)
    metrics.json        per task: accuracy, chance, extraction rate, rule counts; and the mean
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rich.table import Table

from citrus.data.benchmarks import load_task
from citrus.engines import build_engine
from citrus.evaluate.extract import extract_answer
from citrus.evaluate.metrics import summarize
from citrus.prompts import build_messages
from citrus.tracking import console, progress_bar

log = logging.getLogger(__name__)


def results_table(title: str, columns: dict[str, dict[str, dict[str, float]]]) -> Table:
    """Accuracy per task (rows) for one or more evaluated models (columns)."""
    table = Table(title=title)
    table.add_column("benchmark")
    for name in columns:
        table.add_column(name, justify="right")
    first = next(iter(columns.values()))
    table.add_column("chance", justify="right")
    for task in first:
        cells = [f"{m[task]['accuracy']:.1%}" if task in m else "-" for m in columns.values()]
        table.add_row(task, *cells, f"{first[task]['chance']:.1%}")
    return table


def evaluate(cfg: Any, out_dir: Path, run: Any, prefix: str = "eval/") -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = build_engine(cfg.engine, cfg.model)
    preds_path = out_dir / "predictions.jsonl"
    preds_path.unlink(missing_ok=True)
    per_task: dict[str, dict[str, float]] = {}
    table_rows: list[list[Any]] = []
    with progress_bar() as bar:
        for task in cfg.benchmark.tasks:
            items, path = load_task(task, cfg.paths.data_dir)
            run.record.add_input(path, f"benchmark/{task.name}")
            conversations = [build_messages(q, cfg.benchmark.prompt) for q in items]
            bar_id = bar.add_task(f"eval {task.name}", total=len(items), info="")
            extracted: dict[int, Any] = {}

            def save(indices: list[int], replies: list[str]) -> None:
                with preds_path.open("a", encoding="utf-8") as f:
                    for i, reply in zip(indices, replies):
                        q = items[i]
                        ex = extract_answer(reply, q.options)
                        extracted[i] = ex
                        f.write(json.dumps({
                            "task": task.name, "id": q.id, "gold": q.answer, "pred": ex.letter,
                            "correct": ex.letter == q.answer, "rule": ex.rule,
                            "prompt": conversations[i], "response": reply,
                        }, ensure_ascii=False) + "\n")
                bar.update(bar_id, advance=len(indices))

            replies = engine.generate(conversations, on_batch=save)
            order = range(len(items))
            metrics = summarize(
                [extracted[i].letter for i in order], [q.answer for q in items],
                [extracted[i].rule for i in order], [len(q.options) for q in items],
            )
            per_task[task.name] = metrics
            log.info("%s: accuracy %.3f on %d (chance %.3f, extracted %.3f)",
                     task.name, metrics["accuracy"], metrics["n"], metrics["chance"], metrics["extracted"])
            table_rows += [
                [task.name, q.id, q.answer, extracted[i].letter, extracted[i].rule, replies[i]]
                for i, q in enumerate(items[: cfg.logger.get("log_predictions", 0)])
            ]
    mean = sum(m["accuracy"] for m in per_task.values()) / len(per_task) if per_task else 0.0
    result = {"tasks": per_task, "mean_accuracy": mean, "model": cfg.model.name, "model_path": str(cfg.model.path)}
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    flat = {f"{prefix}{t}/{k}": v for t, m in per_task.items() for k, v in m.items()}
    flat[f"{prefix}mean_accuracy"] = mean
    run.tracker.log(flat)
    run.tracker.summary(flat)
    run.tracker.table(f"{prefix}predictions", ["task", "id", "gold", "pred", "rule", "response"], table_rows)
    return result


def run(cfg: Any, run: Any) -> dict[str, Any]:
    result = evaluate(cfg, run.dir, run)
    console.print(results_table(f"{cfg.benchmark.name}: {cfg.model.name}", {cfg.model.name: result["tasks"]}))
    return {"mean_accuracy": result["mean_accuracy"]}
