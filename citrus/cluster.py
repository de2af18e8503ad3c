"""`citrus pipeline ... pipeline.submit=slurm`: each stage a cluster job with the resources it
needs, chained with afterok, all writing into one run directory.

    citrus pipeline experiment=citrus_llama70b pipeline.submit=slurm cluster.partition=<p>
    citrus pipeline experiment=citrus_llama70b pipeline.submit=slurm cluster.dry_run=true

The pipeline's stages are grouped into jobs of one kind each: `train` (an SFT, preference or rl
stage: cluster.train's nodes, one task per GPU, Fabric reading SLURM's ranks), `evaluate`
(evaluations and sampling: one node with the GPUs vLLM's tensor parallelism wants) and `data`
(prepare, label, synthesize: CPU, or an API behind the roles). Each job runs the same
`citrus pipeline` command into the same run directory with `pipeline.until=<its last stage>`:
the stage log (stages.jsonl) makes it skip every finished stage and run its own, so a failed job
is resubmitted by running the command again, and a preempted one (submitit's checkpoint/requeue)
resumes from its newest checkpoint. `cluster.dry_run=true` writes the sbatch scripts with their
dependency chain (submitit's own) into <run dir>/slurm/ without submitting anything;
`pipeline.submit=local` runs the jobs one after another through submitit's local executor.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import SlurmExecutor

from citrus.data.schema import whole_records
from citrus.errors import ConfigError
from citrus.result import JobResult

log = logging.getLogger(__name__)

TRAINING = ("sft", "preference", "rl")


def kind_of(stage: str) -> str:
    """train | evaluate | data: which resources a stage asks for."""
    if stage.startswith(TRAINING):
        return "train"
    if stage.startswith("evaluate_") or stage == "sample":
        return "evaluate"  # generation with the policy: vLLM on one node
    return "data"


def plan(stages: list[str]) -> list[tuple[str, list[str]]]:
    """The jobs: runs of consecutive stages of one kind, in order."""
    return [(kind, list(group)) for kind, group in itertools.groupby(stages, key=kind_of)]


class StageJob(submitit.helpers.Checkpointable):
    """One job: `citrus pipeline <argv>` in this process (on each task of a multi-task job).
    Preempted or timed out, submitit calls checkpoint() (Checkpointable's: the same call again)
    and requeues it; the rerun resumes from the stage log and the stage's newest checkpoint."""

    def __init__(self, argv: list[str]):
        self.argv = argv

    def __call__(self) -> int:
        import os

        from citrus.cli import main

        env = submitit.JobEnvironment()
        if env.num_tasks > 1 and "SLURM_PROCID" not in os.environ:
            # the local executor's tasks: torch.distributed's variables, as torchrun sets them
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        code = main(list(self.argv))
        if code:
            raise RuntimeError(f"citrus {' '.join(self.argv[:1])} exited with {code}")
        return 0


class DryRunExecutor(SlurmExecutor):
    """SlurmExecutor writing each sbatch script as it would, 'submitted' with echo: job ids from
    100001 on, so the dependency chain is written too."""

    ids = itertools.count(100001)

    @classmethod
    def affinity(cls) -> int:
        return 1  # no srun needed on this machine

    def _make_submission_command(self, submission_file_path: Path) -> list[str]:
        return ["echo", f"Submitted batch job {next(self.ids)} (dry run: {submission_file_path})"]


def resources(cfg: Any, kind: str, name: str) -> dict[str, Any]:
    """The executor's parameters for a job of `kind` (cluster.train / evaluate / data): submitit's
    generic names for the local executor, SlurmExecutor's (sbatch's) for SLURM."""
    r, c = cfg.cluster[kind], cfg.cluster
    if cfg.pipeline.submit == "local":
        return {"name": name, "nodes": r.nodes, "tasks_per_node": r.tasks_per_node,
                "gpus_per_node": r.gpus_per_node, "cpus_per_task": r.cpus_per_task,
                "timeout_min": r.timeout_min}  # fmt: skip
    params = {
        "job_name": name,
        "nodes": r.nodes,
        "ntasks_per_node": r.tasks_per_node,
        "gpus_per_node": r.gpus_per_node or None,
        "cpus_per_task": r.cpus_per_task,
        "time": r.timeout_min,
        "mem": f"{r.mem_gb}GB" if r.mem_gb else None,
        "partition": c.partition,
        "account": c.account,
        "setup": list(c.setup),
        "signal_delay_s": c.signal_delay_s,
        "additional_parameters": dict(c.additional_parameters),
    }
    return {k: v for k, v in params.items() if v is not None}


def executor(cfg: Any, folder: Path) -> Any:
    if cfg.pipeline.submit == "local":
        return submitit.LocalExecutor(folder, max_num_timeout=cfg.cluster.max_num_timeout)
    cls = DryRunExecutor if cfg.cluster.dry_run else SlurmExecutor
    try:
        return cls(folder, max_num_timeout=cfg.cluster.max_num_timeout)
    except RuntimeError as e:  # no srun here
        raise ConfigError(
            f"pipeline.submit=slurm: {e} (cluster.dry_run=true writes the scripts anyway)"
        ) from None


def submit(cfg: Any, run: Any, stages: list[str], argv: list[str]) -> JobResult:
    """Submit the pipeline's stages as chained jobs (SLURM), or run them one after another
    (local); write <run dir>/slurm/jobs.json."""
    folder = run.dir / "slurm"
    log_path = run.dir / "stages.jsonl"
    done = {r["stage"] for r in whole_records(log_path)} if log_path.is_file() else set()
    if cfg.pipeline.until is not None:
        stages = stages[: stages.index(cfg.pipeline.until) + 1]
    stages = [s for s in stages if s not in done]  # a resubmission asks only for what is left
    run.tracker.finish()  # the jobs continue this W&B run (its id is in run.json)
    jobs, previous = [], None
    for i, (kind, group) in enumerate(plan(stages)):
        params = resources(cfg, kind, f"{cfg.name}-{i}-{group[-1]}")
        if previous is not None and cfg.pipeline.submit == "slurm":
            params["dependency"] = f"afterok:{previous.job_id}"
        ex = executor(cfg, folder)  # each job its own parameters (they accumulate)
        ex.update_parameters(**params)
        command = [*argv, "pipeline.submit=none", f"pipeline.until={group[-1]}"]
        job = ex.submit(StageJob(command))
        log.info("job %s: %s (%s) %s", job.job_id, kind, ", ".join(group), " ".join(command))
        jobs.append({"job_id": job.job_id, "kind": kind, "stages": group, "command": command,
                     "resources": params})  # fmt: skip
        (folder / "jobs.json").write_text(json.dumps(jobs, indent=2, default=str))
        if cfg.pipeline.submit == "local":
            job.result()  # the local executor keeps no dependencies: one after another
        previous = job
    if cfg.pipeline.submit == "local":  # done: the record as the last job left it
        run.record.data = json.loads(run.record.path.read_text())
        outputs = {k: Path(v) for k, v in run.record.data.get("outputs", {}).items()}
        return JobResult(run.record.data.get("metrics", {}), outputs)
    return JobResult({"pipeline/jobs": len(jobs)}, {"jobs": folder / "jobs.json"}, "submitted")
