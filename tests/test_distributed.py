"""Two processes on CPU (gloo): DDP and FSDP2 train the same model as one process with twice
the accumulation, FSDP2 resumes exactly from its sharded checkpoint, and a multi-process job
makes one run directory (in a multirun too)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import exported, log_rows, run_cli, train_run

from citrus.errors import DataError

BASE = (
    "experiment=quickstart",
    "logger=none",
    "data.quickstart.n_train=32",
    "trainer.micro_batch_size=2",
    "trainer.max_steps=4",
    "trainer.log_every=1",
    "trainer.accelerator=cpu",
)


def train(run_dir: Path, *overrides: str) -> dict:
    return train_run(run_dir, [*BASE, *overrides])


def curve(run_dir: Path) -> list[float]:
    return [row["train/loss"] for row in log_rows(run_dir)]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single")
    train(run_dir, "trainer.grad_accum_steps=2")
    return run_dir


def test_ddp_equals_one_process_with_twice_the_accumulation(one_process, tmp_path):
    train(tmp_path, "trainer=ddp", "trainer.devices=2", "trainer.grad_accum_steps=1")
    assert curve(tmp_path) == curve(one_process)
    a, b = exported(one_process), exported(tmp_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / ".citrus" / "rank1.log").is_file()


def test_fsdp2_trains_the_same_model_and_resumes_exactly(one_process, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    fsdp = (
        "trainer=fsdp2",
        "trainer.devices=2",
        "trainer.grad_accum_steps=1",
        "trainer.checkpoint_every=2",
    )
    train(whole, *fsdp)
    assert curve(whole) == pytest.approx(curve(one_process), rel=1e-6)
    a, b = exported(one_process), exported(whole)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert (whole / "checkpoints" / "step-000002" / "state.ckpt").is_dir()  # one shard per rank
    shutil.copytree(whole / "checkpoints" / "step-000002", resumed / "checkpoints" / "step-000002")
    train(resumed, *fsdp, "trainer.resume=auto")
    assert curve(resumed) == curve(whole)[2:]
    c = exported(resumed)
    assert all(torch.equal(b[k], c[k]) for k in b)


def test_a_multi_process_multirun_makes_one_directory_per_job(tmp_path):
    result = run_cli(
        "train",
        "-m",
        *BASE,
        "trainer=ddp",
        "trainer.max_steps=2",
        "trainer.lr=1e-3,2e-3",
        env={"CITRUS_OUTPUTS": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = sorted(tmp_path.glob("**/run.json"))
    assert len(records) == 2, records
    assert {json.loads(r.read_text())["status"] for r in records} == {"completed"}
    assert sorted(p.name for p in records[0].parent.parent.iterdir() if p.is_dir()) == ["0", "1"]


@pytest.mark.timeout(600)
def test_a_failed_multi_process_run_leaves_the_next_one_free_to_start(tmp_path):
    """A two-process run that fails after its workers started (a record over the length limit,
    found while tokenizing) stops them and undoes the launch environment, so the next
    multi-process run in the same process (a multirun's next job) starts its own workers."""
    with pytest.raises(DataError, match="exceed the limit of 64"):
        train(tmp_path / "failed", "trainer=ddp", "trainer.devices=2", "data.max_length=64")
    assert "LOCAL_RANK" not in os.environ and not torch.distributed.is_initialized()
    train(tmp_path / "next", "trainer=ddp", "trainer.devices=2", "trainer.max_steps=1")
    assert (tmp_path / "next" / "model" / "model.safetensors").is_file()
