"""What the data jobs share: their questions, their LLM roles, and a resumable output log."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from citrus.data import quickstart
from citrus.data.benchmarks import load_task
from citrus.data.layouts import read_questions
from citrus.data.schema import DataError, KeyedLog, MCQuestion
from citrus.engines import build_engine, build_role_engine
from citrus.errors import ConfigError, EngineError
from citrus.tracking import progress_bar


def load_questions(cfg: Any, run: Any) -> list[MCQuestion]:
    """synthesis.source (`citrus label` output, or the original Citrus question pool), a task's
    questions (synthesis.source_task), or the quickstart train questions; the first
    synthesis.limit of them."""
    s = cfg.synthesis
    if s.source:
        path = Path(s.source)
        run.record.add_input(path, "synthesis/source")
        if not path.is_file():
            raise DataError(f"synthesis.source: {path} does not exist")
        questions = read_questions(path, path.stem)
    elif s.source_task is not None:
        name = f"{s.source_task.loader}_{s.source_task.split}"  # the questions' id prefix
        # the evaluation group's benchmark.limit is not the source's: synthesis.limit is
        group = OmegaConf.merge(cfg.benchmark, {"limit": None})
        loaded = load_task(name, s.source_task, group, cfg.paths.data_dir)
        for path in loaded.files:
            run.record.add_input(path, "synthesis/source")
        questions = loaded.items
    else:
        q = cfg.data.quickstart
        seed, n = (q.seed, q.n_train) if q is not None else (0, 2000)
        questions = quickstart.generate("train", s.limit or n, seed=seed)
    return questions[: s.limit] if s.limit else questions


def open_question(q: MCQuestion) -> str:
    """The open-ended form `citrus label` wrote, else the stem (options left out)."""
    return q.metadata.get("open_question") or (
        f"{q.context}\n\n{q.question}" if q.context else q.question
    )


def gold(q: MCQuestion) -> str:
    return f"{q.answer}. {q.answer_text}"


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RoleEngines:
    """Engines for the roles a job uses, built on first use; every role played by `self` shares
    the one loaded job engine (cfg.engine + cfg.model)."""

    def __init__(self, cfg: Any):
        self.cfg, self.engines, self.job_engine = cfg, {}, None

    def __getitem__(self, name: str) -> Any:
        if name not in self.engines:
            if name not in self.cfg.roles:
                raise ConfigError(
                    f"roles.{name} is not configured (conf/role/; e.g. role@roles.{name}=self)"
                )
            role = self.cfg.roles[name]
            if role.engine is None and self.job_engine is None:
                self.job_engine = build_engine(self.cfg.engine, self.cfg.model)
            self.engines[name] = build_role_engine(role, self.job_engine)
        return self.engines[name]

    def usage(self) -> dict[str, float]:
        """Requests, tokens and (where the role has prices) USD per role."""
        out: dict[str, float] = {}
        for name, engine in self.engines.items():
            stats, role = engine.stats, self.cfg.roles[name]
            out[f"usage/{name}/requests"] = stats.get("requests", 0)
            out[f"usage/{name}/prompt_tokens"] = stats.get("prompt_tokens", 0)
            out[f"usage/{name}/completion_tokens"] = stats.get("completion_tokens", 0)
            out[f"usage/{name}/usd"] = (
                stats.get("prompt_tokens", 0) * role.price_in_per_mtok
                + stats.get("completion_tokens", 0) * role.price_out_per_mtok
            ) / 1e6
        out["usage/usd"] = sum(v for k, v in out.items() if k.endswith("/usd"))
        return out


def failed_record(q: MCQuestion, reason: str) -> dict:
    return {"id": q.id, "question": q.to_dict(), "status": "failed", "reason": reason}


def run_chunks(
    cfg: Any,
    run: Any,
    name: str,
    log_name: str,
    work: Callable[[Any, RoleEngines, list], list[dict]],
    failed: Callable[[MCQuestion, str], dict] = failed_record,
) -> tuple[list[dict], dict[str, int], RoleEngines]:
    """A data job's frame: its questions, its roles, its resumable log in the run directory;
    `work(cfg, roles, chunk)` turns a chunk of questions into records with a status. Returns the
    records of every finished question (this run's and earlier runs'), counts and the roles."""
    questions = load_questions(cfg, run)
    roles = RoleEngines(cfg)
    out = KeyedLog(run.dir / log_name)
    counts = process(
        questions, out, cfg.synthesis.chunk, name, lambda chunk: work(cfg, roles, chunk), failed
    )
    return [out.done[q.id] for q in questions if q.id in out.done], counts, roles


def process(
    questions: list[MCQuestion],
    out: KeyedLog,
    chunk_size: int,
    name: str,
    work: Callable[[list[MCQuestion]], list[dict]],
    failed: Callable[[MCQuestion, str], dict],
) -> dict[str, int]:
    """Run `work` over the questions not yet in `out`, a chunk at a time, appending each chunk's
    records. A chunk whose requests fail for good is recorded item by item as failed, with the
    reason, and the job goes on."""
    todo = [q for q in questions if q.id not in out.done]
    counts = {"done": len(questions) - len(todo), "kept": 0, "failed": 0}
    with progress_bar() as bar:
        task = bar.add_task(name, total=len(questions), completed=counts["done"], info="")
        for chunk in chunks(todo, chunk_size):
            try:
                records = work(chunk)
            except EngineError as e:
                records = [failed(q, f"request failed: {e}") for q in chunk]
            out.append(records)
            counts["done"] += len(records)
            counts["kept"] += sum(r["status"] == "kept" for r in records)
            counts["failed"] += sum(r["status"] == "failed" for r in records)
            bar.update(
                task, advance=len(records), info=f"kept {counts['kept']} failed {counts['failed']}"
            )
    return counts
