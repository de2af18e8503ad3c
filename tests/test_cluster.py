"""A pipeline whose processes a cluster launcher started (srun: one task per GPU, each running the
same `citrus pipeline` command): one run.json, one W&B run, every evaluation and data stage once
(rank 0), training on every process. SLURM itself is not here: two processes get the variables
srun sets (SLURM_NTASKS, SLURM_PROCID, ...) on 127.0.0.1, which Lightning Fabric reads as it
would on a cluster."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SMOKE, SMOKE_PIPELINE, compose_config, run_cli

from citrus.cluster import kind_of, plan
from citrus.pipeline import stage_names

PIPELINE = [
    *SMOKE_PIPELINE,
    "trainer=ddp",
    "trainer.devices=2",
    "trainer.accelerator=cpu",
    "pipeline.stages=[sft,sample,preference]",
    "pipeline.preference.trainer.max_steps=2",
    "synthesis.limit=4",
    "synthesis.sample.num_samples=2",
]


def srun_env(rank: int, ntasks: int, port: int) -> dict[str, str]:
    """What srun sets for task `rank` of a one-node job (and the address it would resolve)."""
    return {
        "SLURM_JOB_ID": "424242",
        "SLURM_JOB_NAME": "citrus",
        "SLURM_NTASKS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": str(ntasks),
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "SLURM_NODELIST": "localhost",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


@pytest.mark.long  # two processes through three trainings' worth of stages: ~1.5 min
def test_two_srun_tasks_make_one_record_one_wandb_run_and_train_together(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tasks = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "citrus.cli",
                "pipeline",
                *PIPELINE,
                f"hydra.run.dir={tmp_path}",
            ],
            cwd=REPO,
            env={**os.environ, **srun_env(rank, 2, port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in range(2)
    ]
    outs = [t.communicate(timeout=900) for t in tasks]
    for t, (_, err) in zip(tasks, outs):
        assert t.returncode == 0, err[-3000:]
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["status"] == "completed" and len(record["inputs"]) >= 2
    assert len(list(tmp_path.glob("wandb/offline-run-*"))) == 1
    questions = 6  # SMOKE's benchmark.tasks.quickstart.limit
    for stage in ("base", "sft", "preference"):
        lines = (tmp_path / f"evaluate_{stage}" / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == questions, f"evaluate_{stage} asked {len(lines)} times"
    sampled = (tmp_path / "sample" / "samples.jsonl").read_text().splitlines()
    assert len(sampled) == 4  # synthesis.limit, once
    stages = [
        json.loads(line)["stage"] for line in (tmp_path / "stages.jsonl").read_text().splitlines()
    ]
    assert len(stages) == len(set(stages)) == 7  # prepare, 3 evaluations, sft, sample, preference
    rank0, rank1 = (err for _, err in outs)
    # both trained (sft and preference), in one process group of two
    assert rank0.count("GLOBAL_RANK: 0, MEMBER: 1/2") == 2
    assert rank1.count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2
    assert not (tmp_path / "sft" / ".citrus").exists()  # citrus started no processes itself


ALL = "[label,synthesize,sft,sample,preference]"  # the recipe's stages on a question pool


def test_stages_group_into_jobs_by_the_resources_they_need():
    cfg = compose_config("pipeline", ["experiment=citrus_llama70b", f"pipeline.stages={ALL}"])
    names = stage_names(cfg)
    assert names == [
        "prepare", "evaluate_base", "label", "synthesize", "sft1", "evaluate_sft1", "sft2",
        "evaluate_sft2", "sft3", "evaluate_sft3", "sample", "preference", "evaluate_preference",
    ]  # fmt: skip
    assert [kind_of(n) for n in ("sft2", "preference", "sample", "evaluate_base", "label")] == [
        "train", "train", "evaluate", "evaluate", "data",
    ]  # fmt: skip
    assert plan(names) == [
        ("data", ["prepare"]), ("evaluate", ["evaluate_base"]), ("data", ["label", "synthesize"]),
        ("train", ["sft1"]), ("evaluate", ["evaluate_sft1"]), ("train", ["sft2"]),
        ("evaluate", ["evaluate_sft2"]), ("train", ["sft3"]),
        ("evaluate", ["evaluate_sft3", "sample"]), ("train", ["preference"]),
        ("evaluate", ["evaluate_preference"]),
    ]  # fmt: skip


def sbatch(script: str) -> dict[str, str]:
    """The #SBATCH options of a script."""
    out = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            out[key] = value
    return out


def test_the_70b_preset_writes_its_sbatch_chain_without_submitting(tmp_path):
    """cluster.dry_run: submitit's own scripts for every job of the 70B preset, each asking for
    what its stage needs, each after the previous one (afterok), none submitted."""
    result = run_cli(
        "pipeline", "experiment=citrus_llama70b", f"pipeline.stages={ALL}",
        "pipeline.submit=slurm", "cluster.dry_run=true",
        "cluster.partition=gpu", "logger=none", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = json.loads((tmp_path / "slurm" / "jobs.json").read_text())
    assert len(jobs) == 11
    previous = None
    for job in jobs:
        script = (tmp_path / "slurm" / f"{job['job_id']}_submission.sh").read_text()
        options = sbatch(script)
        if job["kind"] == "train":  # 4 nodes x 8 GPUs, a task per GPU, 3 days
            expected = {"nodes": "4", "ntasks-per-node": "8", "gpus-per-node": "8", "time": "4320"}
        elif job["kind"] == "evaluate":  # one node, vLLM over 8 GPUs
            expected = {"nodes": "1", "ntasks-per-node": "1", "gpus-per-node": "8"}
        else:  # the recipe's roles are gpt-4o: no GPU
            expected = {"nodes": "1", "ntasks-per-node": "1"}
            assert "gpus-per-node" not in options
        assert {k: options.get(k) for k in expected} == expected, (job["stages"], options)
        assert options["partition"] == "gpu" and options["signal"].startswith("USR2@")
        if previous is None:
            assert "dependency" not in options
        else:
            assert options["dependency"] == f"afterok:{previous}"
        previous = job["job_id"]
        assert job["command"][:2] == ["pipeline", "experiment=citrus_llama70b"]
        assert f"pipeline.until={job['stages'][-1]}" in job["command"]
        assert f"hydra.run.dir={tmp_path.resolve()}" in job["command"]
        assert "srun" in script and "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1" in script
    assert not (tmp_path / "stages.jsonl").exists()  # nothing ran


@pytest.mark.long  # six submitit jobs of a smoke pipeline: ~2 min
def test_the_jobs_run_through_submitits_local_executor_into_one_run(tmp_path):
    args = [*PIPELINE, "trainer=single", "trainer.devices=1", "cluster.train.gpus_per_node=0",
            "cluster.evaluate.gpus_per_node=0"]  # fmt: skip
    result = run_cli("pipeline", *args, "pipeline.submit=local", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = json.loads((tmp_path / "slurm" / "jobs.json").read_text())
    assert [j["stages"] for j in jobs][:3] == [["prepare"], ["evaluate_base"], ["sft"]]
    stages = [
        json.loads(line)["stage"] for line in (tmp_path / "stages.jsonl").read_text().splitlines()
    ]
    assert stages == ["prepare", "evaluate_base", "sft", "evaluate_sft", "sample", "preference",
                      "evaluate_preference"]  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "preference/mean_accuracy" in metrics
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["status"] == "completed" and len(record["resumed_at"]) == len(jobs)
    assert len(list(tmp_path.glob("wandb/offline-run-*"))) == len(jobs) + 1  # one run id


@pytest.mark.long  # a training job, preempted and requeued: ~1 min
def test_a_preempted_training_job_is_requeued_and_resumes_from_its_newest_checkpoint(tmp_path):
    """submitit's local executor runs the job as SLURM would; SIGUSR2 to its task is SLURM's
    warning before a preemption or the time limit: StageJob.checkpoint requeues it, and
    trainer.resume=auto picks up its newest checkpoint; the weights equal an uninterrupted run's."""
    import submitit
    import torch
    from conftest import exported

    from citrus.cluster import StageJob

    args = [*SMOKE, "trainer.max_steps=30", "trainer.checkpoint_every=3", "trainer.resume=auto"]
    reference = tmp_path / "reference"
    assert run_cli("train", *args, f"hydra.run.dir={reference}").returncode == 0
    run_dir = tmp_path / "preempted"
    executor = submitit.LocalExecutor(tmp_path / "slurm", max_num_timeout=3)
    executor.update_parameters(timeout_min=20)
    job = executor.submit(StageJob(["train", *args, f"hydra.run.dir={run_dir}"]))
    checkpoints = run_dir / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("step-*/state.ckpt")):
        assert job.state not in ("FAILED", "DONE", "COMPLETED"), job.stderr()
        assert time.monotonic() < deadline, "no checkpoint in 300 s"
        time.sleep(0.1)
    # SLURM's warning signal (--signal=USR2@signal_delay_s) goes to the job's task, the process
    # running StageJob under the local executor's controller
    task = subprocess.run(["pgrep", "-P", str(job._process.pid)], capture_output=True, text=True)
    os.kill(int(task.stdout.split()[0]), signal.SIGUSR2)
    assert job.result() == 0
    assert "Requeued job" in Path(job.paths.stdout).read_text()
    log = (run_dir / "train.log").read_text()
    assert re.search(r"resumed from .*step-0000(\d\d) at step \d+", log), log[-2000:]
    ours, theirs = exported(run_dir), exported(reference)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
