"""Where a run reports to (W&B, TensorBoard, CSV or nothing: LOGGERS), and rich progress bars on
the terminal."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import netrc
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from citrus.errors import ConfigError
from citrus.plugins import lookup
from citrus.record import redact

log = logging.getLogger(__name__)
console = Console(stderr=True)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal and os.environ.get("CITRUS_PROGRESS") != "1",
    )


def wandb_mode(mode: str) -> str:
    """auto: WANDB_MODE if set, online with credentials, offline without."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class Tracker(Protocol):
    """Where a run's metrics go. `log` keys start with their stage (`sft/loss`,
    `preference/rewards/margins`) and `step` is that stage's own training step, so each stage
    keeps its curve however many ran before it."""

    info: dict[str, Any]  # where the run lives, for run.json and `citrus report`

    def log(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None: ...

    def summary(self, metrics: dict[str, Any]) -> None: ...

    def image(self, key: str, path: Path) -> None: ...

    def artifacts(self, inputs: dict[str, dict], models: dict[str, Path]) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


class NullTracker:
    """logger=none: metrics stay in the run directory (metrics.json, train_log.jsonl, run.json)."""

    info: dict[str, Any] = {}

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def image(self, key: str, path: Path) -> None:
        pass

    def artifacts(self, inputs: dict[str, dict], models: dict[str, Path]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def stage_of(key: str) -> str:
    """sft/loss -> sft; preference/val/loss -> preference."""
    return key.split("/", 1)[0]


class WandbTracker(NullTracker):
    """One W&B run (rank zero only). Each stage's curves run against its own step metric
    (`<stage>/step`, declared with define_metric): a pipeline's stages restart their steps, and
    W&B drops any row logged at a step below the last one."""

    def __init__(self, run: Any):
        self.run = run
        self.stages: set[str] = set()
        self.info = {
            "id": run.id,
            "project": run.project,
            "group": run.group,
            "tags": list(run.tags),
            "mode": run.settings.mode,
        }

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.run is None:  # finished: the run went on elsewhere (pipeline.submit)
            return
        row = dict(metrics)
        if step is not None:
            for stage in {stage_of(k) for k in metrics} - self.stages:
                self.run.define_metric(f"{stage}/step", hidden=True)
                self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
                self.stages.add(stage)
            row.update({f"{stage}/step": step for stage in {stage_of(k) for k in metrics}})
        self.run.log(row)

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        import wandb

        if self.run is None:
            return
        self.run.log({key: wandb.Table(columns=columns, data=rows)})

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def image(self, key: str, path: Path) -> None:
        import wandb

        if self.run is None:
            return
        self.run.log({key: wandb.Image(str(path))})

    def artifacts(self, inputs: dict[str, dict], models: dict[str, Path]) -> None:
        """Data files read are the run's inputs (used: W&B draws the lineage; uploaded, they are
        small); exported models its outputs (by reference: a 70B export is 140 GB, W&B records
        where it is, not a copy)."""
        import wandb

        if self.run is None:
            return
        for path, meta in inputs.items():
            artifact = wandb.Artifact(
                _artifact_name(meta["role"]),
                type="dataset",
                metadata={"md5": meta["md5"], "path": path},
            )
            artifact.add_file(path)
            self.use(artifact)
        for key, model_dir in models.items():  # model, or a pipeline stage's sft/model: sft_model
            artifact = wandb.Artifact(
                _artifact_name(f"{self.run.group}-{key.replace('/', '_')}"),
                type="model",
                metadata={"path": str(model_dir)},
            )
            artifact.add_reference(Path(model_dir).resolve().as_uri(), checksum=False)
            self.run.log_artifact(artifact)

    def use(self, artifact: Any) -> None:
        """use_artifact; offline (where use_artifact refuses) the same record, logged with
        use_after_commit as use_artifact itself logs a new artifact, so `wandb sync` keeps the
        lineage."""
        if self.run.settings.mode != "offline":
            self.run.use_artifact(artifact)
        else:
            self.run._log_artifact(artifact, is_user_created=True, use_after_commit=True)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


class FabricTracker(NullTracker):
    """logger=csv or logger=tensorboard: Lightning Fabric's own loggers, with W&B's keys and
    steps (each stage's step on its rows). Summaries and tables land as files beside them."""

    def __init__(self, logger: Any, config: dict[str, Any]):
        self.logger = logger
        self.dir = Path(logger.log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.info = {"dir": str(self.dir)}
        try:
            logger.log_hyperparams(redact(config))
        except NotImplementedError:  # Fabric's CSVLogger: the config as hparams.yaml ourselves
            (self.dir / "hparams.yaml").write_text(yaml.safe_dump(redact(config), sort_keys=False))

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logger.log_metrics(dict(metrics), step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        path = self.dir / "summary.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**old, **metrics}, indent=2, default=str))

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        with open(self.dir / f"{_artifact_name(key)}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerows([columns, *rows])

    def finish(self, exit_code: int = 0) -> None:
        self.logger.finalize("success" if exit_code == 0 else "failed")


def _artifact_name(text: str) -> str:
    """W&B artifact names allow letters, digits, dashes, underscores and dots."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def run_group(name: str, sweep: dict | None) -> str:
    """A sweep's jobs share a group named after the sweep; a single run groups under its
    experiment."""
    if sweep is None:
        return name
    parts = Path(sweep["dir"]).parts
    return _artifact_name("-".join([name, *parts[-3:]]))


def run_tags(config: dict[str, Any], job: str) -> list[str]:
    """What the run trained and measured, as W&B tags to filter by."""
    tags = [f"job:{job}"]
    for group in ("model", "data", "algorithm", "benchmark"):
        value = (config.get(group) or {}).get("name")
        if value:
            tags.append(f"{group}:{value}")
    return tags


def open_none(
    logger_cfg: Any, config: dict, run_dir: Path, job: str, name: str, sweep=None, resume=None
):
    return NullTracker()


def open_wandb(
    logger_cfg: Any,
    config: dict,
    run_dir: Path,
    job: str,
    name: str,
    sweep=None,
    resume: str | None = None,
):
    """A W&B run; `resume` (the id an earlier start of this run recorded) continues that run
    online; offline, a resumed run is a new W&B run of the same group."""
    import wandb

    mode = wandb_mode(logger_cfg.mode)
    if mode == "offline":  # `wandb sync` of two offline segments of one id keeps only one
        resume = None  # each segment its own run, in the same group
    run = wandb.init(
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        group=logger_cfg.group or run_group(name, sweep),
        tags=[*run_tags(config, job), *logger_cfg.tags],
        name=f"{name}-{job}-{run_dir.name}",
        job_type=job,
        dir=str(run_dir),
        mode=mode,
        config=redact(config),
        reinit="finish_previous",
        id=resume,
        resume="allow" if resume else None,
        settings=wandb.Settings(silent=True, console="off"),
    )
    log.info("W&B %s run %s in %s", mode, run.id, run_dir / "wandb")
    return WandbTracker(run)


def open_fabric_logger(kind: str):
    """csv or tensorboard: Lightning Fabric's logger of that kind, writing to <run_dir>/<kind>/."""

    def open_logger(
        logger_cfg: Any, config: dict, run_dir: Path, job: str, name: str, sweep=None, resume=None
    ):
        from lightning.fabric import loggers

        if kind == "tensorboard" and not any(
            importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")
        ):
            raise ConfigError(
                "logger=tensorboard needs tensorboard: pip install 'citrus[tensorboard]'"
            )
        cls = {"csv": loggers.CSVLogger, "tensorboard": loggers.TensorBoardLogger}[kind]
        # a resumed run writes beside the first start's files (Fabric's CSVLogger would delete
        # metrics.csv): <run_dir>/<kind>/, then resumed-1/, resumed-2/, ...
        root = run_dir / kind
        version = "" if not root.is_dir() else f"resumed-{len(list(root.glob('resumed-*'))) + 1}"
        return FabricTracker(cls(root_dir=str(run_dir), name=kind, version=version), config)

    return open_logger


# logger.name -> how a run's tracker opens (conf/logger/<name>.yaml picks one)
LOGGERS: dict[str, Callable[..., Tracker]] = {
    "none": open_none,
    "wandb": open_wandb,
    "csv": open_fabric_logger("csv"),
    "tensorboard": open_fabric_logger("tensorboard"),
}


def open_tracker(
    logger_cfg: Any,
    config: dict[str, Any],
    run_dir: Path,
    job: str,
    name: str,
    sweep: dict | None = None,
    resume: str | None = None,
) -> Tracker:
    open_logger = lookup(LOGGERS, logger_cfg.name, "logger.name")
    return open_logger(logger_cfg, config, run_dir, job, name, sweep, resume)


def wandb_report(
    groups: list[str], project: str, entity: str | None, title: str, panels: list[dict[str, Any]]
) -> str | None:
    """A W&B report over the runs' groups, through the wandb-workspaces reports API (online
    only)."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        log.info("wandb-workspaces is not installed: no W&B report (the local one is written)")
        return None
    plots = [
        wr.BarPlot(title=p["title"], metrics=p["y"])
        if p["kind"] == "bar"
        else wr.LinePlot(title=p["title"], x=p["x"], y=p["y"])
        for p in panels
    ]
    runset = wr.Runset(
        project=project, entity=entity, filters=f"group in {groups}" if groups else ""
    )
    report = wr.Report(
        project=project,
        entity=entity,
        title=title,
        blocks=[wr.H1(title), wr.PanelGrid(runsets=[runset], panels=plots)],
    )
    report.save()
    return report.url
