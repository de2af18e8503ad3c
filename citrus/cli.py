"""The `citrus` command: the first word picks the job, the rest are Hydra overrides.

    citrus train experiment=quickstart trainer.max_steps=50
    citrus evaluate model.path=outputs/train/2026-11-24/12-00-00 benchmark=quickstart
    citrus train -m trainer.lr=3e-4,1e-3          # multirun
    citrus pipeline experiment=quickstart --cfg job   # print the composed config

A user error (citrus.errors: a bad config, a bad record, a missing file) prints one message and
exits 1; CITRUS_DEBUG=1 or HYDRA_FULL_ERROR=1 shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from citrus.jobs import JOBS

log = logging.getLogger("citrus")

USAGE = """usage: citrus <job> [hydra overrides...] [-m] [--cfg job] [--help]
       citrus reproduce <run_dir> [overrides...]

jobs:
{jobs}
  {reproduce:<{width}}  a run again from its run.json, into a new directory; metrics compared

Every job composes conf/config.yaml; override any key or group on the command line, e.g.
  citrus pipeline experiment=quickstart
  citrus train experiment=quickstart model=tiny_qwen trainer.max_steps=50
  citrus evaluate model.path=<run_dir> benchmark=quickstart logger=none
`citrus <job> --help` lists the config groups; `citrus <job> --cfg job` prints the config.
"""


def debugging() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("CITRUS_DEBUG", "HYDRA_FULL_ERROR"))


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def usage() -> str:
    width = max(map(len, JOBS))
    jobs = "\n".join(f"  {j:<{width}}  {d}" for j, (_, d) in JOBS.items())
    return USAGE.format(jobs=jobs, reproduce="reproduce", width=width)


def main(argv: list[str] | None = None) -> int | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "reproduce":
        from citrus.reproduce import reproduce

        return reproduce(argv[1:], run_job=main)  # main runs the recorded job again
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"citrus {version('citrus')}")
        return 0
    job, overrides = argv[0], argv[1:]
    if job not in JOBS:
        print(f"citrus: unknown job {job!r}; jobs: {', '.join(JOBS)}", file=sys.stderr)
        return 2
    return run_hydra(job, overrides)


def run_hydra(job: str, overrides: list[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from citrus.config import CONF_DIR, register_configs
    from citrus.errors import CitrusError
    from citrus.jobs import execute, objective

    _quiet_libraries()
    register_configs()

    def task(cfg: Any) -> Any:
        hc = HydraConfig.get()
        user_overrides = [o for o in hc.overrides.task if not o.startswith("job=")]
        multirun = hc.mode == RunMode.MULTIRUN
        sweep = {"dir": hc.sweep.dir, "job_num": hc.job.num} if multirun else None
        run_dir = Path(hc.runtime.output_dir)
        try:
            result = execute(job, cfg, run_dir, user_overrides, sweep)
        except CitrusError as e:
            if debugging():
                raise
            record = run_dir / "run.json"
            where = f"run record: {record}; " if record.is_file() else ""
            print(
                f"citrus {job}: {e}\n  ({where}CITRUS_DEBUG=1 shows the traceback)", file=sys.stderr
            )
            if multirun:  # the sweep goes on; an Optuna trial counts as failed
                return objective(None, cfg.optimized_metric) if cfg.optimized_metric else None
            raise SystemExit(1) from None
        return objective(result, cfg.optimized_metric) if cfg.optimized_metric else result

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
