"""A killed `citrus pipeline` resumed by the same command into the same run directory: the same
metrics, no finished stage computed again, the same W&B group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SMOKE, SMOKE_PIPELINE, compose_config, run_cli
from wandb_records import read_run

from citrus.errors import ConfigError

PIPELINE = [
    *SMOKE_PIPELINE,
    "pipeline.stages=[sft,sample,preference]",
    "pipeline.preference.trainer.max_steps=4",
    "pipeline.preference.trainer.checkpoint_every=2",
    "synthesis.limit=4",
    "synthesis.sample.num_samples=2",
]
TIMING = ("seconds", "tokens_per_s", "padding_efficiency")


def finished(run_dir: Path) -> list[str]:
    path = run_dir / "stages.jsonl"
    return (
        [json.loads(line)["stage"] for line in path.read_text().splitlines()]
        if path.is_file()
        else []
    )


def comparable(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if not k.endswith(TIMING)}


def stage_files(run_dir: Path, stages: list[str]) -> dict[str, int]:
    """mtime of every file a finished stage wrote: a stage computed again rewrites them."""
    return {
        str(p): p.stat().st_mtime_ns
        for stage in stages
        for p in (run_dir / stage).rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference")
    result = run_cli("pipeline", *PIPELINE, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert finished(run_dir) == [
        "prepare", "evaluate_base", "sft", "evaluate_sft", "sample", "preference",
        "evaluate_preference",
    ]  # fmt: skip
    return run_dir


def kill_when(run_dir: Path, ready, timeout: float = 600) -> None:
    """Start the pipeline, SIGKILL its process group once ready(run_dir) holds."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "citrus.cli", "pipeline", *PIPELINE, f"hydra.run.dir={run_dir}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while not ready(run_dir):
        assert proc.poll() is None, f"finished before the kill point: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


KILL_POINTS = {
    # SFT between its checkpoints (resumes from step 3 of 6)
    "sft": lambda d: (d / "sft" / "checkpoints" / "step-000003" / "state.ckpt").exists(),
    # sampling, after the SFT export was evaluated
    "sample": lambda d: "evaluate_sft" in finished(d) and (d / "sample").is_dir(),
    # the preference stage, after its first checkpoint
    "preference": lambda d: (d / "preference" / "checkpoints" / "step-000002").is_dir(),
}


@pytest.mark.slow  # three killed pipelines and their resumptions: ~4 min
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_a_killed_pipeline_resumes_to_the_same_metrics_without_redoing_a_stage(
    reference, point, tmp_path
):
    kill_when(tmp_path, KILL_POINTS[point])
    done = finished(tmp_path)
    files = stage_files(tmp_path, [s for s in done if s not in ("prepare", "evaluate_base")])
    first = json.loads((tmp_path / "run.json").read_text())
    result = run_cli("pipeline", *PIPELINE, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert comparable(tmp_path) == comparable(reference)
    assert finished(tmp_path) == finished(reference)  # each stage logged once
    after = stage_files(tmp_path, done)
    assert {k: after.get(k) for k in files} == files, "a finished stage was computed again"
    for stage in done:
        assert f"stage {stage}: finished before, kept" in result.stderr
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["status"] == "completed" and record["earlier_status"] == "running"
    assert record["started_at"] == first["started_at"] and len(record["resumed_at"]) == 1
    # offline, each start is its own W&B run in the run's group (`wandb sync` of two offline
    # segments of one id keeps one); online the same id is resumed
    runs = [read_run(r)["run"] for r in sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))]
    # (a run killed seconds in may not have flushed its run record: those that did name the group)
    assert len(runs) == 2 and {r.run_group for r in runs if r} == {first["wandb"]["group"]}
    assert record["wandb"]["id"] != first["wandb"]["id"]


def test_a_run_directory_of_another_config_is_not_resumed(tmp_path):
    from citrus.pipeline import StageLog, config_digest

    cfg = compose_config("pipeline", list(SMOKE))
    log = StageLog(tmp_path / "stages.jsonl", config_digest(cfg))
    log.add("sft", {"sft/final_loss": 1.0}, {"model": tmp_path / "model"})
    again = StageLog(tmp_path / "stages.jsonl", config_digest(cfg))
    assert again.get("sft")["outputs"] == {"model": str(tmp_path / "model")}
    other = compose_config("pipeline", [*SMOKE, "trainer.lr=0.5"])
    with pytest.raises(ConfigError, match=r"another config \(stage sft\)"):
        StageLog(tmp_path / "stages.jsonl", config_digest(other))
