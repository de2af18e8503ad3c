"""Where a run reports to: W&B (or nothing), and rich progress bars on the terminal."""

from __future__ import annotations

import logging
import netrc
import os
import re
from pathlib import Path
from typing import Any

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


class Tracker:
    """Metrics, tables and summaries for one run; a no-op unless W&B is on (rank zero only)."""

    def __init__(self, wandb_run: Any = None):
        self.wandb_run = wandb_run
        # where the run lives in W&B, for run.json and `citrus report`
        self.info = (
            {}
            if wandb_run is None
            else {
                "id": wandb_run.id,
                "project": wandb_run.project,
                "group": wandb_run.group,
                "tags": list(wandb_run.tags),
                "mode": wandb_run.settings.mode,
            }
        )

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({key: wandb.Table(columns=columns, data=rows)})

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            self.wandb_run.summary.update(metrics)

    def log_artifacts(self, inputs: dict[str, dict], models: dict[str, Path]) -> None:
        """Data files read (uploaded: they are small) and exported models (by reference: a 70B
        export is 140 GB; W&B records where it is, not a copy)."""
        if self.wandb_run is None:
            return
        import wandb

        for path, meta in inputs.items():
            artifact = wandb.Artifact(
                _artifact_name(meta["role"]),
                type="dataset",
                metadata={"md5": meta["md5"], "path": path},
            )
            artifact.add_file(path)
            self.wandb_run.log_artifact(artifact)
        for key, model_dir in models.items():  # model, or a pipeline stage's sft/model: sft_model
            artifact = wandb.Artifact(
                _artifact_name(f"{self.wandb_run.group}-{key.replace('/', '_')}"),
                type="model",
                metadata={"path": str(model_dir)},
            )
            artifact.add_reference(Path(model_dir).resolve().as_uri(), checksum=False)
            self.wandb_run.log_artifact(artifact)

    def finish(self, exit_code: int = 0) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=exit_code)
            self.wandb_run = None


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


def open_tracker(
    logger_cfg: Any,
    config: dict[str, Any],
    run_dir: Path,
    job: str,
    name: str,
    sweep: dict | None = None,
) -> Tracker:
    if logger_cfg.name == "none":
        return Tracker()
    if logger_cfg.name != "wandb":
        raise ConfigError(f"logger.name: unknown {logger_cfg.name!r}; one of ['none', 'wandb']")
    import wandb

    mode = wandb_mode(logger_cfg.mode)
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
        settings=wandb.Settings(silent=True, console="off"),
    )
    log.info("W&B %s run %s in %s", mode, run.id, run_dir / "wandb")
    return Tracker(run)


def wandb_report(groups: list[str], project: str, entity: str | None, title: str) -> str | None:
    """A W&B report over the runs' group, through the wandb-workspaces reports API (online only)."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        log.info("wandb-workspaces is not installed: no W&B report (the local one is written)")
        return None
    report = wr.Report(
        project=project,
        entity=entity,
        title=title,
        blocks=[
            wr.H1(title),
            wr.PanelGrid(
                runsets=[
                    wr.Runset(
                        project=project,
                        entity=entity,
                        filters=f"group in {groups}" if groups else "",
                    )
                ],
                panels=[
                    wr.BarPlot(title="mean accuracy", metrics=["mean_accuracy"]),
                    wr.LinePlot(
                        title="training loss", y=["sft/loss", "train/loss", "preference/loss"]
                    ),
                    wr.LinePlot(title="preference margin", y=["preference/rewards/margins"]),
                ],
            ),
        ],
    )
    report.save()
    return report.url
