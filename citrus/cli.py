"""The `citrus` command: the first word picks the job, the rest are Hydra overrides.

citrus train experiment=quickstart trainer.max_steps=50
citrus evaluate model.path=outputs/train/2026-11-24/12-00-00 benchmark=quickstart
citrus train -m trainer.lr=3e-4,1e-3          # multirun
citrus pipeline experiment=quickstart --cfg job   # print the composed config
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("citrus")

# job -> (module with `run(cfg, run) -> metrics`, one-line description)
JOBS: dict[str, tuple[str, str]] = {
    "prepare": (
        "citrus.data.prepare",
        "generate or fetch the training data and benchmark files of a config",
    ),
    "label": (
        "citrus.synthesis.label",
        "rewrite questions in open-ended form and label their difficulty",
    ),
    "synthesize": (
        "citrus.synthesis.pathways",
        "expert-pathway reasoning traces for SFT (teacher, critic, judge, narrative)",
    ),
    "sample": (
        "citrus.synthesis.sample",
        "preference pairs from the policy's own answers (answer mapper, judges)",
    ),
    "decontaminate": (
        "citrus.synthesis.decontaminate",
        "n-gram overlap of data= with every benchmark= test set",
    ),
    "train": (
        "citrus.train.trainer",
        "train model= on data= with algorithm= (SFT, CPO, DPO, SimPO, ORPO) through Lightning Fabric",
    ),
    "evaluate": ("citrus.evaluate.evaluator", "score model= on benchmark= through engine="),
    "serve": (
        "citrus.serve",
        "serve model= through vLLM's OpenAI-compatible server (127.0.0.1 by default)",
    ),
    "chat": (
        "citrus.chat",
        "chat with model= through engine= using the Citrus expert prompt (chat.prompt=... asks once)",
    ),
    "pipeline": (
        "citrus.pipeline",
        "prepare -> evaluate -> pipeline.stages (label, synthesize, sft, sample, preference), evaluating after each",
    ),
    "report": (
        "citrus.report",
        "markdown/HTML report with plots of report.runs=[run or sweep dirs] (and a W&B report when online)",
    ),
}

USAGE = """usage: citrus <job> [hydra overrides...] [-m] [--cfg job] [--help]
       citrus reproduce <run_dir> [overrides...]

jobs:
{jobs}
  {reproduce:<{width}}  re-run a run from its run.json (same job and overrides, a new run directory) and compare metrics

Every job composes conf/config.yaml; override any key or group on the command line, e.g.
  citrus pipeline experiment=quickstart
  citrus train experiment=quickstart model=tiny_qwen trainer.max_steps=50
  citrus evaluate model.path=<run_dir> benchmark=quickstart logger=none
`citrus <job> --help` lists the config groups; `citrus <job> --cfg job` prints the config.
"""


@dataclass
class Run:
    """What a job writes to: its directory, its run.json, its tracker."""

    dir: Path
    record: Any
    tracker: Any


def execute(
    job: str, cfg: Any, run_dir: Path, overrides: list[str], sweep: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Run one job inside its run directory, recording how it started and how it ended.

    In a multirun (`sweep` set) a failed job is recorded (run.json status "failed") and the
    sweep goes on."""
    from omegaconf import OmegaConf

    from citrus.record import RunRecord
    from citrus.tracking import open_tracker

    check_writable([run_dir, Path(cfg.paths.cache_dir)], cfg.paths.min_free_gb)
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    record = RunRecord(run_dir, job, overrides, config, sweep)
    tracker = open_tracker(cfg.logger, config, run_dir, job, cfg.name, sweep)
    if tracker.info:
        record.data["wandb"] = tracker.info
        record.write()
    try:
        metrics = importlib.import_module(JOBS[job][0]).run(cfg, Run(run_dir, record, tracker))
    except BaseException as e:
        record.finish("failed", error=f"{type(e).__name__}: {e}")
        tracker.finish(exit_code=1)
        if sweep is not None and isinstance(e, Exception):
            log.exception("job failed; the sweep goes on (see %s)", record.path)
            return None
        raise
    record.finish(
        "completed", metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    )
    tracker.log_artifacts(
        record.data["inputs"], {k: v for k, v in metrics.items() if k.endswith("model_dir")}
    )
    tracker.finish()
    return metrics


class StorageError(OSError):
    """A run directory or cache that cannot take the job's output: found before any work."""


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
                f"{d}: only {free_gb:.1f} GB free, the job wants paths.min_free_gb={min_free_gb:g}; "
                "free space or lower paths.min_free_gb"
            )


def objective(metrics: dict[str, Any] | None, key: str) -> float:
    """What an Optuna sweep maximises: one metric of the job; NaN (a failed trial) if it failed."""
    if metrics is None:
        return float("nan")
    if key not in metrics:
        numeric = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
        raise KeyError(f"optimized_metric={key!r} is not a metric of this job; it has {numeric}")
    return float(metrics[key])


def reproduce(argv: list[str]) -> int:
    """`citrus reproduce <run_dir> [overrides]`: the run's job with its recorded overrides (plus
    any given) into <run_dir>-reproduced, then the two runs' metrics side by side."""
    import json

    from citrus.record import REDACTED, git_state

    if not argv or argv[0].startswith("-"):
        print("usage: citrus reproduce <run_dir> [overrides...]", file=sys.stderr)
        return 2
    source = Path(argv[0])
    path = source / "run.json"
    if not path.is_file():
        print(f"citrus reproduce: no run.json in {source}", file=sys.stderr)
        return 2
    record = json.loads(path.read_text())
    redacted = [o for o in record["overrides"] if o.endswith("=" + REDACTED)]
    if redacted:
        print(
            f"citrus reproduce: {', '.join(redacted)} held a secret; pass it again from the environment",
            file=sys.stderr,
        )
        return 2
    now = git_state()
    if record["git"].get("commit") and (now["commit"], now["dirty"]) != (
        record["git"]["commit"],
        False,
    ):
        log.warning(
            "the code is at %s%s, the run was made at %s%s: results may differ",
            now["commit"],
            " (dirty)" if now["dirty"] else "",
            record["git"]["commit"],
            " (dirty)" if record["git"]["dirty"] else "",
        )
    # where the original ran is not part of the experiment: a fresh directory next to it
    keep = [
        o
        for o in record["overrides"]
        if not o.startswith(("hydra.run.dir=", "hydra.sweep.dir=", "hydra.mode="))
    ]
    target = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("hydra.run.dir=")), None)
    target = Path(target) if target else _fresh(source.with_name(source.name + "-reproduced"))
    extra = [a for a in argv[1:] if not a.startswith("hydra.run.dir=")]
    code = main([record["job"], *keep, *extra, "hydra.mode=RUN", f"hydra.run.dir={target}"])
    if not (target / "run.json").is_file():
        print(f"the reproduction stopped before it started (see {target})", file=sys.stderr)
        return 1
    again = json.loads((target / "run.json").read_text())
    if again["status"] != "completed":
        print(f"the reproduction {again['status']}: {again.get('error')}", file=sys.stderr)
        return 1
    print(compare_metrics(record.get("metrics", {}), again.get("metrics", {}), source, target))
    return code


def _fresh(path: Path) -> Path:
    n, out = 1, path
    while out.exists():
        n += 1
        out = path.with_name(f"{path.name}-{n}")
    return out


def compare_metrics(
    before: dict[str, Any], after: dict[str, Any], source: Path, target: Path
) -> str:
    """The numeric metrics of both runs, and which differ (timings always do: left out)."""
    timing = ("seconds", "tokens_per_s", "_model_dir", "model_dir")
    keys = sorted(
        k
        for k in set(before) | set(after)
        if isinstance(before.get(k, after.get(k)), (int, float)) and not k.endswith(timing)
    )
    differ = [k for k in keys if before.get(k) != after.get(k)]
    lines = [
        f"reproduced {source} -> {target}: {len(keys) - len(differ)}/{len(keys)} metrics identical"
    ]
    lines += [f"  {k}: {before.get(k)} -> {after.get(k)}" for k in differ]
    return "\n".join(lines)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, JOBS))
        print(
            USAGE.format(
                jobs="\n".join(f"  {j:<{width}}  {d}" for j, (_, d) in JOBS.items()),
                reproduce="reproduce",
                width=width,
            )
        )
        return 0
    if argv[0] == "reproduce":
        return reproduce(argv[1:])
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"citrus {version('citrus')}")
        return 0
    job, overrides = argv[0], argv[1:]
    if job not in JOBS:
        print(
            f"citrus: unknown job {job!r}; jobs: {', '.join(JOBS)} (see `citrus --help`)",
            file=sys.stderr,
        )
        return 2

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from citrus.config import CONF_DIR, register_configs

    _quiet_libraries()
    register_configs()

    def task(cfg: Any) -> Any:
        hc = HydraConfig.get()
        user_overrides = [o for o in hc.overrides.task if not o.startswith("job=")]
        sweep = (
            {"dir": hc.sweep.dir, "job_num": hc.job.num} if hc.mode == RunMode.MULTIRUN else None
        )
        metrics = execute(job, cfg, Path(hc.runtime.output_dir), user_overrides, sweep)
        return objective(metrics, cfg.optimized_metric) if cfg.optimized_metric else metrics

    # Hydra's parser wants every override before the options (`--cfg job`, `-m`, `--info`).
    is_override = [("=" in a and not a.startswith("-")) for a in overrides]
    sys.argv = [
        f"citrus {job}",
        f"job={job}",
        *(a for a, o in zip(overrides, is_override) if o),
        *(a for a, o in zip(overrides, is_override) if not o),
    ]
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(task)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
