"""Where a run reports to: W&B (or nothing), and rich progress bars on the terminal."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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

    def finish(self, exit_code: int = 0) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=exit_code)
            self.wandb_run = None


def open_tracker(logger_cfg: Any, config: dict[str, Any], run_dir: Path, job: str, name: str) -> Tracker:
    if logger_cfg.name == "none":
        return Tracker()
    if logger_cfg.name != "wandb":
        raise ValueError(f"logger.name: unknown {logger_cfg.name!r}; one of ['none', 'wandb']")
    import wandb

    mode = wandb_mode(logger_cfg.mode)
    run = wandb.init(
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        group=logger_cfg.group,
        tags=list(logger_cfg.tags),
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
