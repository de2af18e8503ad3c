"""`citrus evaluate`: ask every question of a benchmark group, extract answers, score them.

Writes, per run directory:
    predictions.jsonl   one line per question: prompt, raw response, extracted letter, rule, gold
                        (appended batch by batch, so a crash keeps what was finished)
    metrics.json        per task: accuracy, chance, extraction rate, rule counts; and the mean
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.table import Table

from citrus.data.benchmarks import load_task
from citrus.data.schema import KeyedLog
from citrus.engines import Scoring, build_engine, build_role_engine
from citrus.errors import ConfigError
from citrus.evaluate.answer_check import check_answers, unread
from citrus.evaluate.extract import EXTRACTOR_VERSION
from citrus.evaluate.extractors import EXTRACTORS, LADDER, Extractor
from citrus.evaluate.metrics import majority_vote, summarize
from citrus.models import card
from citrus.plugins import lookup
from citrus.prompts import build_messages, build_text
from citrus.result import JobResult
from citrus.tracking import console, progress_bar

log = logging.getLogger(__name__)
TABLE_COLUMNS = ["task", "id", "gold", "pred", "rule", "response"]  # W&B predictions table


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


def prediction_row(
    task: str, q: Any, conversation: list[dict], reply: str, reader: Extractor = LADDER
) -> dict[str, Any]:
    ex = reader.read(reply, q.options)
    return {
        "task": task,
        "id": q.id,
        "gold": q.answer,
        "pred": ex.letter,
        "correct": ex.letter == q.answer,
        "rule": ex.rule,
        "prompt": conversation,
        "response": reply,
    }


def sampled_row(
    task: str, q: Any, conversation: list[dict], replies: list[str], reader: Extractor = LADDER
) -> dict[str, Any]:
    """Several sampled replies to one question; the row's answer is their majority vote."""
    samples = [reader.read(r, q.options) for r in replies]
    pred = majority_vote([ex.letter for ex in samples])
    return {
        "task": task,
        "id": q.id,
        "gold": q.answer,
        "pred": pred,
        "correct": pred == q.answer,
        "rule": "majority_vote",
        "prompt": conversation,
        "response": replies[0],
        "samples": [
            {"response": r, "pred": ex.letter, "rule": ex.rule} for r, ex in zip(replies, samples)
        ],
    }


def ask_samples(engine: Any, prompts: list, n: int, seed: int, save: Any) -> None:
    """Ask each prompt n times (seeds seed..seed+n-1); `save` gets a question once all its n
    replies are in, so predictions.jsonl only ever holds whole questions."""
    replies: dict[int, dict[int, str]] = {}

    def collect(indices: list[int], texts: list[str]) -> None:
        done = []
        for flat, text in zip(indices, texts):
            i, k = divmod(flat, n)
            replies.setdefault(i, {})[k] = text
            if len(replies[i]) == n:
                done.append(i)
        if done:
            save(done, [[replies[i][k] for k in range(n)] for i in done])

    expanded = [p for p in prompts for _ in range(n)]
    engine.generate(expanded, on_batch=collect, seeds=[seed + k for _ in prompts for k in range(n)])


def likelihood_row(task: str, q: Any, context: str, scores: list[float]) -> dict[str, Any]:
    letters = list(q.options)
    pred = letters[max(range(len(scores)), key=scores.__getitem__)]
    return {
        "task": task,
        "id": q.id,
        "gold": q.answer,
        "pred": pred,
        "correct": pred == q.answer,
        "rule": "likelihood",
        "prompt": context,
        "response": "",
        "logprobs": dict(zip(letters, scores)),
    }


def plan(
    engine: Any, asked: list, how: dict[str, str], reader: Extractor = LADDER
) -> tuple[list, Any, Any]:
    """What to send for each question, how a reply becomes a row (read by `reader`), and how
    to ask: generate (once, or engine.num_samples times) or score the options (likelihood)."""
    n = engine.cfg.num_samples
    if how["mode"] == "generate":
        prompts = [build_messages(q, how["prompt"]) for q in asked]
        if n > 1:
            return (
                prompts,
                functools.partial(sampled_row, reader=reader),
                lambda save: ask_samples(engine, prompts, n, engine.cfg.seed, save),
            )
        row = functools.partial(prediction_row, reader=reader)
        return prompts, row, lambda save: engine.generate(prompts, on_batch=save)
    if how["mode"] == "likelihood":
        if not isinstance(engine, Scoring):
            raise ConfigError(
                f"benchmark.mode=likelihood needs the model's log-probabilities: engine=hf or "
                f"engine=vllm (engine={engine.cfg.name} only generates)"
            )
        prompts = [build_text(q, how["prompt"]) for q in asked]
        continuations = [continuations_of(q, how.get("continuation", "letter")) for q in asked]
        return (
            prompts,
            likelihood_row,
            lambda save: engine.loglikelihoods(prompts, continuations, on_batch=save),
        )
    raise ConfigError(f"benchmark.mode: unknown {how['mode']!r}; one of ['generate', 'likelihood']")


def continuations_of(q: Any, kind: str) -> list[str]:
    """What likelihood mode scores after the prompt: " A".." D", or the option texts (" yes")."""
    if kind not in ("letter", "text"):
        raise ConfigError(f"benchmark task continuation: unknown {kind!r}; one of letter, text")
    return [f" {k}" if kind == "letter" else f" {v}" for k, v in q.options.items()]


def protocol(task: Any, bench: Any) -> dict[str, str]:
    """How a task is asked: its own mode and prompt where set, the group's otherwise; in
    likelihood mode, what is scored when it is not the letters."""
    how = {"mode": task.mode or bench.mode, "prompt": task.prompt or bench.prompt}
    if how["mode"] == "likelihood" and task.continuation != "letter":
        how["continuation"] = task.continuation
    return how


def with_variant(task: Any, bench: Any) -> Any:
    """The task as the protocol asks it: its loader's variant (benchmark.variants) over it."""
    variant = bench.variants.get(task.loader) if bench.variants else None
    return OmegaConf.merge(task, variant) if variant else task


def evaluate_task(
    engine: Any,
    task: str,
    items: list,
    how: dict[str, str],
    preds: KeyedLog,
    advance: Any,
    seed: int = 0,
    mapper: Any = None,
    reader: Extractor = LADDER,
    check_prompt: str = "answer_check",
) -> tuple[dict, list[dict]]:
    """Ask every question not already in predictions.jsonl (a killed run resumes), append each
    finished batch to it, score the task.

    generate: the model reasons, then `reader` (the protocol's extractor) reads its answer; with
    a `mapper` engine, rows with an unread answer wait for its answer check (asked with
    `check_prompt`) before they are written.
    likelihood: the option letter the model finds most likely after the question."""
    rows: dict[int, dict] = {i: preds.done[q.id] for i, q in enumerate(items) if q.id in preds.done}
    advance(len(rows))
    todo = [i for i in range(len(items)) if i not in rows]
    asked = [items[i] for i in todo]
    prompts, make_row, ask = plan(engine, asked, how, reader)
    held: list[int] = []  # rows waiting for the answer check

    def save(indices: list[int], outputs: list[Any]) -> None:
        batch = {
            todo[j]: make_row(task, asked[j], prompts[j], out) for j, out in zip(indices, outputs)
        }
        rows.update(batch)
        waiting = [i for i, row in batch.items() if mapper and unread(row)]
        held.extend(waiting)
        preds.append([row for i, row in batch.items() if i not in waiting])
        advance(len(batch))

    if todo:
        ask(save)
    if held:  # a second pass: the engine's own call may not be re-entered from its callback
        check_answers(
            mapper, [rows[i] for i in held], [items[i] for i in held], check_prompt, reader
        )
        preds.append([rows[i] for i in held])
    ordered = [rows[i] for i in range(len(items))]
    samples = [r.get("samples") or [r] for r in ordered]  # one answer per question unless sampled
    metrics = summarize(
        [[s["pred"] for s in ss] for ss in samples],
        [r["gold"] for r in ordered],
        [s["rule"] for ss in samples for s in ss],
        [len(q.options) for q in items],
        seed=seed,
    )
    return metrics, ordered


def extractor(name: str) -> Extractor:
    return lookup(EXTRACTORS, name, "benchmark.extractor")


def resumable_predictions(out_dir: Path, cfg: Any) -> KeyedLog:
    """predictions.jsonl of this directory, kept for a rerun of the same evaluation (same model,
    engine settings, benchmark, prompt and extractor: its stamp), started afresh otherwise."""
    what = {
        k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "engine", "benchmark")
    }
    # stored rows hold the reads of the extractor that wrote them
    what["extractor_version"] = [EXTRACTOR_VERSION, extractor(cfg.benchmark.extractor).version]
    what["answer_mapper"] = (
        OmegaConf.to_container(cfg.roles.answer_mapper, resolve=True)
        if cfg.benchmark.answer_check
        else None
    )
    stamp = hashlib.md5(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
    path, stamp_path = out_dir / "predictions.jsonl", out_dir / "predictions.stamp"
    if not stamp_path.is_file() or stamp_path.read_text() != stamp:
        path.unlink(missing_ok=True)
        stamp_path.write_text(stamp)
    return KeyedLog(path)


def evaluate(cfg: Any, out_dir: Path, run: Any, prefix: str = "eval/") -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = build_engine(cfg.engine, cfg.model)
    mapper_role = cfg.roles.answer_mapper if cfg.benchmark.answer_check else None
    mapper = build_role_engine(mapper_role, engine) if mapper_role else None
    preds = resumable_predictions(out_dir, cfg)
    reader = extractor(cfg.benchmark.extractor)
    tasks = {name: with_variant(task, cfg.benchmark) for name, task in cfg.benchmark.tasks.items()}
    per_task: dict[str, dict[str, float]] = {}
    protocols = {name: protocol(task, cfg.benchmark) for name, task in tasks.items()}
    files: dict[str, dict[str, str]] = {}
    table_rows: list[list[Any]] = []
    with progress_bar() as bar:
        for name, task in tasks.items():
            loaded = load_task(name, task, cfg.benchmark, cfg.paths.data_dir)
            files[name] = {
                str(p): run.record.add_input(p, f"benchmark/{name}") for p in loaded.files
            }
            bar_id = bar.add_task(f"eval {name}", total=len(loaded.items), info="")
            metrics, rows = evaluate_task(
                engine,
                name,
                loaded.items,
                protocols[name],
                preds,
                lambda n, bar_id=bar_id: bar.update(bar_id, advance=n),
                seed=cfg.seed,
                mapper=mapper,
                reader=reader,
                check_prompt=cfg.benchmark.answer_check_prompt,
            )
            metrics["skipped"] = len(loaded.skipped)
            per_task[name] = metrics
            log.info(
                "%s: accuracy %.3f, valid %.3f on %d (chance %.3f, extracted %.3f)",
                name,
                metrics["accuracy"],
                metrics["valid_accuracy"],
                metrics["n"],
                metrics["chance"],
                metrics["extracted"],
            )
            table_rows += [
                [r[k] for k in TABLE_COLUMNS] for r in rows[: cfg.logger.log_predictions]
            ]
    mean = sum(m["accuracy"] for m in per_task.values()) / len(per_task) if per_task else 0.0
    valid = sum(m["valid_accuracy"] for m in per_task.values()) / max(1, len(per_task))
    result = {
        "tasks": per_task,
        "mean_accuracy": mean,  # macro average over the group's tasks
        "mean_valid_accuracy": valid,  # the same over the answers the extractor read
        "model": cfg.model.name,
        "model_path": str(cfg.model.path),
        # what the numbers depend on, so they can be compared and reproduced
        "benchmark": cfg.benchmark.name,
        "protocol": cfg.benchmark.protocol,  # conf/protocol/: split, prompt, decoding, reading
        "extractor": cfg.benchmark.extractor,
        "prompt": cfg.benchmark.prompt,
        "mode": cfg.benchmark.mode,
        "protocols": protocols,  # per task, where a task sets its own
        "extractor_version": EXTRACTOR_VERSION,
        "answer_check": OmegaConf.to_container(mapper_role, resolve=True) if mapper_role else None,
        "sampling": OmegaConf.to_container(cfg.engine, resolve=True),
        "seed": cfg.seed,
        "data_md5": files,
    }
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    if Path(str(cfg.model.path)).is_dir():  # a citrus export's card gains these scores
        try:
            card.add_evaluation(Path(cfg.model.path), result)
        except OSError as e:  # a read-only export: the scores are in metrics.json all the same
            log.warning("model card of %s not updated: %s", cfg.model.path, e)
    flat = {f"{prefix}{t}/{k}": v for t, m in per_task.items() for k, v in m.items()}
    flat[f"{prefix}mean_accuracy"], flat[f"{prefix}mean_valid_accuracy"] = mean, valid
    run.tracker.log(flat)
    run.tracker.summary(
        {
            **flat,
            "protocol": cfg.benchmark.protocol,
            "prompt": cfg.benchmark.prompt,
            "extractor": cfg.benchmark.extractor,
            "extractor_version": EXTRACTOR_VERSION,
        }
    )
    run.tracker.table(f"{prefix}predictions", TABLE_COLUMNS, table_rows)
    return result


def run(cfg: Any, run: Any) -> JobResult:
    result = evaluate(cfg, run.dir, run)
    console.print(
        results_table(f"{cfg.benchmark.name}: {cfg.model.name}", {cfg.model.name: result["tasks"]})
    )
    outputs = {"predictions": run.dir / "predictions.jsonl", "metrics": run.dir / "metrics.json"}
    summary = {"mean_accuracy": result["mean_accuracy"], "protocol": cfg.benchmark.protocol}
    return JobResult(summary, outputs)
