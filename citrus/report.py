"""`citrus report`: review runs offline, from their run directories alone.

    citrus report report.runs=[outputs/multirun/pipeline/2026-11-24/12-00-00]   # a sweep
    citrus report report.runs=[<run dir>,<run dir>]                              # any runs

Every run directory (one with a run.json) under the given paths becomes a row: its status, the
overrides that set it apart from the others (the sweep's parameters), accuracy after each stage
per benchmark, training curves and preference margins, drawn with matplotlib into report.md and
report.html next to their PNGs. Sweeps write one by themselves when they end (SweepReport, a
Hydra callback in the sweeps/ presets). With W&B online and wandb-workspaces installed, the same
runs also get a W&B report.
"""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from citrus.data.schema import whole_records
from citrus.errors import MissingFileError
from citrus.result import JobResult
from citrus.tracking import wandb_report

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    dir: Path
    job: str
    status: str
    overrides: list[str]
    sweep: dict | None
    metrics: dict[str, Any]
    error: str | None = None
    wandb_group: str | None = None
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> task -> accuracy
    ci95: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # same keys
    protocols: dict[str, str] = field(default_factory=dict)  # stage -> evaluation protocol
    curves: dict[str, list[tuple[int, float]]] = field(
        default_factory=dict
    )  # stage -> (step, loss)
    val_curves: dict[str, list[tuple[int, float]]] = field(
        default_factory=dict
    )  # stage -> (step, validation loss)
    margins: dict[str, list[tuple[int, float]]] = field(
        default_factory=dict
    )  # stage -> (step, reward margin)
    rewards: dict[str, list[tuple[int, float]]] = field(
        default_factory=dict
    )  # RL stage -> (step, mean reward of its rollouts)
    label: str = ""


def _stage(path: Path, run_dir: Path, job: str) -> str:
    """evaluate_sft/ -> sft; preference/ -> preference; the run dir itself -> the job."""
    if path == run_dir:
        return job
    return path.name.removeprefix("evaluate_")


def load_run(run_dir: Path) -> RunSummary:
    record = json.loads((run_dir / "run.json").read_text())
    out = RunSummary(
        run_dir,
        record["job"],
        record["status"],
        record.get("overrides", []),
        record.get("sweep"),
        record.get("metrics", {}),
        record.get("error"),
        (record.get("wandb") or {}).get("group"),
    )
    for path in sorted(
        run_dir.rglob("metrics.json"), key=lambda p: p.stat().st_mtime_ns
    ):  # stage order
        metrics = json.loads(path.read_text())
        if isinstance(metrics, dict) and isinstance(metrics.get("tasks"), dict):
            stage = _stage(path.parent, run_dir, out.job)
            out.accuracy[stage] = {t: m["accuracy"] for t, m in metrics["tasks"].items()}
            out.ci95[stage] = {
                t: (m["ci95_low"], m["ci95_high"])
                for t, m in metrics["tasks"].items()
                if "ci95_low" in m
            }
            out.protocols[stage] = metrics.get("protocol", "default")
    for path in sorted(run_dir.rglob("train_log.jsonl"), key=lambda p: p.stat().st_mtime_ns):
        stage = _stage(path.parent, run_dir, out.job)
        for row in whole_records(path):
            for key, value in row.items():
                if "/val/" in key:  # validation: its loss drawn beside the training curve
                    if key.endswith("/val/loss"):
                        out.val_curves.setdefault(stage, []).append((row["step"], value))
                elif key.endswith("/loss"):
                    out.curves.setdefault(stage, []).append((row["step"], value))
                elif key.endswith("/rewards/margins"):
                    out.margins.setdefault(stage, []).append((row["step"], value))
                elif key.endswith("/reward"):
                    out.rewards.setdefault(stage, []).append((row["step"], value))
    return out


def report_panels(runs: list[RunSummary]) -> list[dict[str, Any]]:
    """The W&B report's panels, bound to keys the runs logged: mean accuracy after each evaluated
    stage (`base/mean_accuracy`; an evaluate job's `eval/mean_accuracy`), and per trained stage
    its loss (with validation, where it ran), reward margins (preference) or rollout reward and
    pass rate (RL), against that stage's step."""
    evaluated = dict.fromkeys("eval" if s == "evaluate" else s for r in runs for s in r.accuracy)
    panels: list[dict[str, Any]] = []
    if evaluated:
        metrics = [f"{s}/mean_accuracy" for s in evaluated]
        panels.append({"kind": "bar", "title": "mean accuracy after each stage", "y": metrics})
    for stage in dict.fromkeys(s for r in runs for s in r.curves):
        x, validated = f"{stage}/step", any(stage in r.val_curves for r in runs)
        loss = [f"{stage}/loss", *([f"{stage}/val/loss"] if validated else [])]
        panels.append({"kind": "line", "title": f"{stage}: loss", "x": x, "y": loss})
        if any(stage in r.margins for r in runs):
            margins = [f"{stage}/rewards/margins"]
            panels.append(
                {"kind": "line", "title": f"{stage}: reward margin", "x": x, "y": margins}
            )
        if any(stage in r.rewards for r in runs):
            rl = [f"{stage}/reward", f"{stage}/pass_rate"]
            panels.append({"kind": "line", "title": f"{stage}: rollout reward", "x": x, "y": rl})
    return panels


def find_runs(paths: list[str | Path], exclude: Path | None = None) -> list[RunSummary]:
    """Every run directory at or under the paths (a sweep dir holds one per job), in order. Only
    the outermost run.json counts: checkpoints carry a copy of theirs; `exclude` (the report's
    own run) does not count."""
    dirs: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise MissingFileError(f"report.runs: {p} does not exist")
        found: list[Path] = []
        for d in sorted(
            {r.parent for r in p.rglob("run.json")},
            key=lambda d: (len(d.parts), _job_num(d), str(d)),
        ):
            if d != exclude and not any(a in found for a in d.parents):
                found.append(d)
        if not found:
            raise MissingFileError(f"report.runs: no run.json at or under {p}")
        dirs += [d for d in found if d not in dirs]
    runs = [load_run(d) for d in dirs]
    label_runs(runs)
    return runs


def _job_num(d: Path) -> int:
    return int(d.name) if d.name.isdigit() else -1


def label_runs(runs: list[RunSummary]) -> None:
    """Name each run by the overrides the others do not share (a sweep's parameters)."""
    common = set.intersection(*(set(r.overrides) for r in runs)) if runs else set()
    for r in runs:
        own = [
            o.lstrip("+~") for o in r.overrides if o not in common and not o.startswith("hydra.")
        ]
        r.label = " ".join(own) or r.dir.name


def short(label: str) -> str:
    """pipeline.preference.trainer.lr=1e-06 -> lr=1e-06, for legends and axes."""
    return " ".join(
        part.split("=", 1)[0].rsplit(".", 1)[-1]
        + ("=" + part.split("=", 1)[1] if "=" in part else "")
        for part in label.split()
    )


# ---------------------------------------------------------------- plots


def plots(runs: list[RunSummary], out: Path) -> dict[str, Path]:
    """The runs' accuracy after each stage (with 95% CI error bars), loss curves, reward
    margins and RL rewards, as PNGs in `out`."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    paths = {}
    tasks = sorted({t for r in runs for s in r.accuracy.values() for t in s})
    stages = list(dict.fromkeys(s for r in runs for s in r.accuracy))
    if tasks:
        panel = max(4.0, 0.5 * len(runs) * len(stages) + 2)
        fig, axes = plt.subplots(
            1, len(tasks), figsize=(min(30.0, panel * len(tasks)), 4), squeeze=False
        )
        width = 0.8 / max(1, len(stages))
        for ax, task in zip(axes[0], tasks):
            for i, stage in enumerate(stages):
                values = [r.accuracy.get(stage, {}).get(task, math.nan) for r in runs]
                xs = [x + i * width for x in range(len(runs))]
                ax.bar(xs, values, width, yerr=error_bars(runs, stage, task), capsize=3,
                       label=stage)  # fmt: skip
            ax.set_xticks(
                [x + width * (len(stages) - 1) / 2 for x in range(len(runs))],
                [short(r.label) for r in runs],
                rotation=20,
                ha="right",
                fontsize=7,
            )
            ax.set_ylim(0, 1)
            ax.set_title(f"{task}: accuracy after each stage (95% CI)", fontsize=9)
            ax.legend(fontsize=7)
        paths["accuracy"] = _save(fig, out / "accuracy.png")
    for kind, title in (
        ("curves", "training loss"),
        ("margins", "preference reward margin (chosen - rejected)"),
        ("rewards", "RL reward (mean over each step's rollouts)"),
    ):
        curve_stages = list(dict.fromkeys(s for r in runs for s in getattr(r, kind)))
        if not curve_stages:
            continue
        fig, axes = plt.subplots(
            1, len(curve_stages), figsize=(5 * len(curve_stages), 3.5), squeeze=False
        )
        for ax, stage in zip(axes[0], curve_stages):
            for r in runs:
                points = getattr(r, kind).get(stage)
                if points:
                    line = ax.plot(*zip(*points), marker="o", markersize=3, label=short(r.label))
                val = r.val_curves.get(stage) if kind == "curves" else None
                if val:  # validation loss on the same axes, dashed, in the run's colour
                    color = line[0].get_color() if points else None
                    ax.plot(*zip(*val), "--", marker="s", markersize=3, color=color,
                            label=f"{short(r.label)} (validation)")  # fmt: skip
            ax.set_title(f"{stage}: {title}", fontsize=9)
            ax.set_xlabel("step")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
        paths[kind] = _save(fig, out / f"{kind}.png")
    return paths


def error_bars(runs: list[RunSummary], stage: str, task: str) -> list[list[float]]:
    """matplotlib's yerr rows (below, above) from each run's 95% interval; 0 where it has none."""
    below, above = [], []
    for r in runs:
        acc = r.accuracy.get(stage, {}).get(task)
        low, high = r.ci95.get(stage, {}).get(task, (acc, acc))
        below.append(0.0 if acc is None else max(0.0, acc - low))  # float noise never < 0
        above.append(0.0 if acc is None else max(0.0, high - acc))
    return [below, above]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ---------------------------------------------------------------- tables


def accuracy_cell(r: RunSummary, stage: str, task: str) -> str:
    """Accuracy with its 95% bootstrap interval: 45.2% [41.0, 49.3]."""
    if task not in r.accuracy.get(stage, {}):
        return ""
    text = f"{100 * r.accuracy[stage][task]:.1f}%"
    if task in r.ci95.get(stage, {}):
        low, high = r.ci95[stage][task]
        text += f" [{100 * low:.1f}, {100 * high:.1f}]"
    return text


def rows(runs: list[RunSummary]) -> tuple[list[str], list[list[str]]]:
    """One row per run: label, status, evaluation protocol, then accuracy per (stage, task), so
    a sweep over protocols reads side by side per benchmark."""
    columns = list(
        dict.fromkeys((s, t) for r in runs for s, tasks in r.accuracy.items() for t in tasks)
    )
    header = ["run", "job", "status", "protocol", *(f"{t} ({s})" for s, t in columns)]
    body = []
    for r in runs:
        status = r.status if not r.error else f"{r.status}: {r.error[:120]}"
        protocol = ", ".join(dict.fromkeys(r.protocols.values()))
        cells = [accuracy_cell(r, s, t) for s, t in columns]
        body.append([r.label, r.job, status, protocol, *cells])
    return header, body


def write_report(runs: list[RunSummary], out: Path, title: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    drawn = plots(runs, out)
    header, body = rows(runs)
    md = [
        f"# {title}",
        "",
        f"{len(runs)} runs: {sum(r.status == 'completed' for r in runs)} completed, "
        f"{sum(r.status == 'failed' for r in runs)} failed.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    md += ["", *(f"![{k}]({p.name})" for k, p in drawn.items()), "", "Run directories:", ""]
    md += [f"- `{r.label}`: {r.dir}" for r in runs]
    (out / "report.md").write_text("\n".join(md) + "\n")
    cell = lambda tag, c: f"<{tag}>{html.escape(c)}</{tag}>"  # noqa: E731
    page = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}img{max-width:100%}</style>",
        f"<h1>{html.escape(title)}</h1>",
        "<table><tr>" + "".join(cell("th", h) for h in header) + "</tr>",
        *("<tr>" + "".join(cell("td", c) for c in row) + "</tr>" for row in body),
        "</table>",
        *(f"<h2>{k}</h2><img src='{p.name}'>" for k, p in drawn.items()),
    ]
    (out / "report.html").write_text("\n".join(page) + "\n")
    log.info("report of %d runs -> %s", len(runs), out / "report.md")
    return out / "report.md"


def run(cfg: Any, run: Any) -> JobResult:
    runs = find_runs(list(cfg.report.runs), exclude=run.dir)
    title = cfg.report.title or f"citrus report: {len(runs)} runs"
    path = write_report(runs, run.dir, title)
    out: dict[str, Any] = {
        "runs": len(runs),
        "completed": sum(r.status == "completed" for r in runs),
    }
    if cfg.logger.name == "wandb" and run.tracker.info.get("mode") == "online":
        groups = sorted({r.wandb_group for r in runs if r.wandb_group})
        project, entity = cfg.logger.project, cfg.logger.entity
        panels = report_panels(runs)
        out["wandb_report"] = wandb_report(groups, project, entity, title, panels) or ""
    return JobResult(out, {"report": path})


class SweepReport(Callback):
    """Hydra callback: when a multirun ends, write the report of its jobs into
    <sweep dir>/report."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not any(sweep_dir.rglob("run.json")):
            return
        runs = find_runs([sweep_dir])
        path = write_report(
            runs, sweep_dir / "report", f"sweep {config.name}: {len(runs)} jobs ({sweep_dir})"
        )
        print(f"sweep report: {path}")
