"""Running one job: its run directory, run.json and tracker around the job's `run(cfg, run)`.

Every job module (registered in JOBS) has `run(cfg, run: Run) -> JobResult`: its metrics
(run.json, the W&B summary, a sweep's objective) and the files it wrote that a later stage or
another job reads (`outputs`, also kept in run.json). A pipeline stage hands its outputs to
the next stage; nobody guesses a stage's file names from outside.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from citrus.errors import CitrusError, ConfigError, StorageError
from citrus.result import JobResult, Run

log = logging.getLogger("citrus")

# job -> (module with `run(cfg, run) -> JobResult` (or module:function), one-line description)
JOBS: dict[str, tuple[str, str]] = {
    "prepare": ("citrus.data.prepare", "generate or fetch the training data and benchmark files"),
    "label": ("citrus.synthesis.label", "open-ended rewrite and difficulty label of questions"),
    "synthesize": ("citrus.synthesis.pathways", "expert-pathway reasoning traces for SFT"),
    "sample": ("citrus.synthesis.sample", "preference pairs from the policy's own answers"),
    "decontaminate": ("citrus.synthesis.decontaminate", "n-gram overlap of data= with benchmark="),
    "train": ("citrus.train.trainer", "train model= on data= with algorithm= (Lightning Fabric)"),
    "evaluate": ("citrus.evaluate.evaluator", "score model= on benchmark= through engine="),
    "serve": ("citrus.serve", "serve model= through vLLM's OpenAI-compatible server"),
    "chat": ("citrus.chat", "chat with model= through engine= (chat.prompt=... asks once)"),
    "pipeline": (
        "citrus.pipeline",
        "prepare, evaluate, then pipeline.stages, evaluating after each",
    ),
    "report": ("citrus.report", "markdown/HTML report with plots of report.runs=[run dirs]"),
    "push": ("citrus.hub:push", "upload a run's model with its card: hub.run=... hub.repo_id=..."),
    "download": ("citrus.hub:download", "fetch model='s hub weights into the cache, once per node"),
}


def execute(
    job: str,
    cfg: Any,
    run_dir: Path,
    overrides: list[str],
    sweep: dict[str, Any] | None = None,
) -> JobResult | None:
    """Run one job inside its run directory, recording how it started and how it ended.

    In a multirun (`sweep` set) a failed job is recorded (run.json status "failed") and the
    sweep goes on (returns None)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    from citrus.engines import check_engines
    from citrus.record import RunRecord
    from citrus.tracking import NullTracker, open_tracker
    from citrus.train.launch import global_rank

    check_engines(cfg)
    check_writable([run_dir, Path(cfg.paths.cache_dir)], cfg.paths.min_free_gb)
    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        raise ConfigError(
            f"{e.full_key} is required (??? in its config): set {e.full_key}=..."
        ) from None
    rank = global_rank()
    previous = earlier_run(run_dir, job)
    record = RunRecord(run_dir, job, overrides, config, sweep, previous, writes=rank == 0)
    resume = (previous or {}).get(cfg.logger.name, {}).get("id")  # W&B continues that run
    tracker = (  # one run.json, one W&B run: rank 0's
        open_tracker(cfg.logger, config, run_dir, job, cfg.name, sweep, resume)
        if rank == 0
        else NullTracker()
    )
    if tracker.info:
        record.data[cfg.logger.name] = tracker.info  # "wandb": its id, project, group
        record.write()
    try:
        result = job_function(job)(cfg, Run(run_dir, record, tracker, rank))
    except BaseException as e:
        record.finish("failed", error=f"{type(e).__name__}: {e}")
        tracker.finish(exit_code=1)
        if sweep is not None and isinstance(e, CitrusError):
            log.error("job failed: %s; the sweep goes on (see %s)", e, record.path)
            return None
        if sweep is not None and isinstance(e, Exception):
            log.exception("job failed; the sweep goes on (see %s)", record.path)
            return None
        raise
    numeric = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str))}
    record.finish(
        result.status, metrics=numeric, outputs={k: str(v) for k, v in result.outputs.items()}
    )
    tracker.summary(numeric)  # the run's final metrics, as run.json has them
    models = {k: v for k, v in result.outputs.items() if k == "model" or k.endswith("/model")}
    tracker.artifacts(record.data["inputs"], models)
    tracker.finish()
    return result


def earlier_run(run_dir: Path, job: str) -> dict[str, Any] | None:
    """The run.json an earlier start of this job left in run_dir (a killed or requeued run the
    same command now resumes), or None."""
    import json

    path = run_dir / "run.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    # a finished run is not resumed: the same command again is a new run in that directory
    return record if record.get("job") == job and record.get("status") != "completed" else None


def job_function(job: str) -> Any:
    module, _, function = JOBS[job][0].partition(":")
    return getattr(importlib.import_module(module), function or "run")


def check_writable(dirs: list[Path], min_free_gb: float) -> None:
    """Each directory can be created and written to, and has min_free_gb free: hours into a run is
    the wrong time to find out."""
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / f".citrus-write-probe-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise StorageError(
                f"{d} is not writable ({e.strerror or e}); choose another hydra.run.dir / paths.*"
            ) from None
        free_gb = shutil.disk_usage(d).free / 1e9
        if free_gb < min_free_gb:
            raise StorageError(
                f"{d}: only {free_gb:.1f} GB free, the job wants paths.min_free_gb={min_free_gb:g};"
                " free space or lower paths.min_free_gb"
            )


def objective(result: JobResult | None, key: str) -> float:
    """What an Optuna sweep maximises: one metric of the job; NaN (a failed trial) if it failed."""
    if result is None:
        return float("nan")
    if key not in result.metrics:
        numeric = sorted(k for k, v in result.metrics.items() if isinstance(v, (int, float)))
        raise KeyError(f"optimized_metric={key!r} is not a metric of this job; it has {numeric}")
    return float(result.metrics[key])
