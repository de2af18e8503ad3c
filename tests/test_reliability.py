"""What clusters and APIs do to long jobs, done for real: SIGKILL at random steps of training
(SFT, CPO, LoRA, two-process FSDP2) then resume=auto, kills during evaluation and synthesis, an API
server that fails at random, bad input of many kinds, secrets, and storage that cannot take the
output. Each test can fail: it compares weights, counts items and requests, reads the messages."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from chat_server import ChatServer
from conftest import REPO, compose_config, run_cli
from safetensors.torch import load_file

from citrus.data import quickstart
from citrus.data.schema import whole_records
from citrus.engines.hf import HFEngine
from citrus.jobs import execute

# A short SFT run that logs and checkpoints every other step: a kill can land anywhere.
TRAIN = (
    "experiment=quickstart",
    "logger=none",
    "data.quickstart.n_train=48",
    "trainer.micro_batch_size=4",
    "trainer.grad_accum_steps=1",
    "trainer.max_steps=12",
    "trainer.log_every=1",
    "trainer.checkpoint_every=2",
    "trainer.keep_checkpoints=0",
    "trainer.resume=auto",
)
KINDS = {
    "sft": (),
    "cpo": ("data=quickstart_pairs", "algorithm=cpo_simpo"),
    "lora": ("adapter=lora", "adapter.r=4"),
    "fsdp2": ("trainer=fsdp2", "trainer.devices=2"),
}


def start(job: str, *args: str) -> subprocess.Popen:
    """`citrus <job>` in a process group of its own, so a kill reaches every rank it started."""
    return subprocess.Popen(
        [sys.executable, "-m", "citrus.cli", job, *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL the whole process group as soon as ready() holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(
                f"the job ended (rc {proc.returncode}) before the kill: "
                f"{proc.stderr.read()[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError("the kill point was never reached")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def field_values(path: Path, key: str) -> list:
    """`key` of each whole line of a JSONL file a job may still be writing (or was killed in)."""
    return [r[key] for r in whole_records(path) if key in r] if path.is_file() else []


def logged_steps(run_dir: Path) -> list[int]:
    return field_values(run_dir / "train_log.jsonl", "step")


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    model = run_dir / "model"
    files = sorted(model.glob("*.safetensors"))
    assert files, f"no exported weights in {model}"
    out = {}
    for f in files:
        out.update(load_file(f))
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Each kind's run without a kill, once: the weights every resumed run must equal."""
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            run_dir = tmp_path_factory.mktemp(f"reference-{kind}")
            result = run_cli("train", *TRAIN, *KINDS[kind], f"hydra.run.dir={run_dir}")
            assert result.returncode == 0, result.stderr[-3000:]
            cache[kind] = run_dir
        return cache[kind]

    return get


def kill_and_resume(kind: str | tuple[str, ...], kill_step: int, run_dir: Path) -> None:
    """Kill a run of KINDS[kind] (or of these overrides) at kill_step, then resume it."""
    extra = KINDS[kind] if isinstance(kind, str) else kind
    args = (*TRAIN, *extra, f"hydra.run.dir={run_dir}")
    proc = start("train", *args)
    kill_when(proc, lambda: any(s >= kill_step for s in logged_steps(run_dir)))
    assert not (run_dir / "model").exists(), "the killed run must not look finished"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # not "completed"
    result = run_cli("train", *args)  # same run dir, resume=auto
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout + result.stderr


def assert_same_run(resumed: Path, reference: Path) -> None:
    expected, got = weights(reference), weights(resumed)
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"
    assert (
        logged_steps(resumed) == logged_steps(reference) == list(range(1, 13))
    )  # every step logged once


@pytest.mark.parametrize(
    "kind",
    [
        "sft",
        pytest.param("cpo", marks=pytest.mark.long),
        pytest.param("lora", marks=pytest.mark.long),
    ],
)  # cpo and lora: ~40-60 s each, in the long set
def test_sigkill_at_a_random_step_then_resume_gives_the_same_weights(kind, uninterrupted, tmp_path):
    step = random.Random(f"{kind}-kill").randint(2, 10)
    kill_and_resume(kind, step, tmp_path / "run")
    assert_same_run(tmp_path / "run", uninterrupted(kind))


@pytest.mark.long
@pytest.mark.parametrize("seed", range(4))
def test_repeated_random_kills_of_sft_lose_nothing(seed, uninterrupted, tmp_path):
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    for step in sorted(rng.sample(range(1, 12), 2)):  # two kills in one run
        args = (*TRAIN, f"hydra.run.dir={run_dir}")
        proc = start("train", *args)
        kill_when(proc, lambda step=step: any(s >= step for s in logged_steps(run_dir)))
    result = run_cli("train", *TRAIN, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(run_dir, uninterrupted("sft"))


@pytest.mark.long
def test_sigkill_of_two_process_fsdp2_then_resume_gives_the_same_weights(uninterrupted, tmp_path):
    kill_and_resume("fsdp2", random.Random("fsdp2-kill").randint(2, 10), tmp_path / "run")
    assert_same_run(tmp_path / "run", uninterrupted("fsdp2"))


def test_a_half_written_checkpoint_is_never_loaded(uninterrupted, tmp_path):
    from citrus.train.checkpoint import find_checkpoint

    reference = uninterrupted("sft")
    ckpts = reference / "checkpoints"
    newest = max(ckpts.glob("step-*"))
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    good = run_dir / "checkpoints" / "step-000004"
    os.symlink(ckpts / "step-000004", good)
    (run_dir / "checkpoints" / f"{newest.name}.tmp").mkdir()  # a write the kill interrupted
    (run_dir / "checkpoints" / "step-000099").mkdir()  # renamed, but its state never landed
    assert find_checkpoint("auto", run_dir) == good


# ---------------------------------------------------------------- evaluation and synthesis


@pytest.fixture(scope="module")
def tiny_server_engine():
    cfg = compose_config("evaluate", ["model=tiny_llama", "engine.max_new_tokens=16"])
    return HFEngine(cfg.engine, cfg.model)


def prediction_ids(run_dir: Path) -> list[str]:
    return field_values(run_dir / "predictions.jsonl", "id")


def test_evaluation_killed_mid_run_resumes_without_asking_twice(tiny_server_engine, tmp_path):
    n = 12
    with ChatServer(tiny_server_engine, delay=0.1) as server:
        args = (
            "logger=none",
            "engine=openai",
            f"engine.base_url={server.url}",
            "engine.served_model=tiny",
            "engine.max_new_tokens=16",
            "engine.batch_size=2",
            "engine.concurrency=1",
            f"engine.cache_path={tmp_path / 'cache.jsonl'}",
            "benchmark=quickstart",
            f"benchmark.tasks.quickstart.limit={n}",
            f"hydra.run.dir={tmp_path / 'run'}",
        )
        proc = start("evaluate", *args)
        kill_when(proc, lambda: len(prediction_ids(tmp_path / "run")) >= 4)
        before = len(set(prediction_ids(tmp_path / "run")))
        result = run_cli("evaluate", *args)
        assert result.returncode == 0, result.stderr[-3000:]
    ids = prediction_ids(tmp_path / "run")
    expected = [q.id for q in quickstart.generate("test", n)]
    assert sorted(ids) == sorted(expected)  # every question exactly once
    # each question was asked once; at most the one request in flight at the kill went out again
    assert n <= server.seen["ok"] <= n + 1, server.seen
    assert 4 <= before < n
    cache = [
        json.loads(line)["key"] for line in (tmp_path / "cache.jsonl").read_text().splitlines()
    ]
    assert len(cache) == len(set(cache)) == n


def test_synthesis_killed_at_a_random_point_finishes_each_question_once(tmp_path):
    from test_synthesis import LIMIT, ROLES, ScriptedClinician, over_http

    clinician = ScriptedClinician()
    run_dir = tmp_path / "run"
    with ChatServer(clinician, delay=0.05) as server:
        roles = over_http(server.url, tmp_path)
        args = (
            "logger=none",
            f"synthesis.limit={LIMIT}",
            "synthesis.chunk=1",
            *roles,
            f"hydra.run.dir={run_dir}",
        )
        proc = start("synthesize", *args)
        target = random.Random("synthesize-kill").randint(1, LIMIT - 2)
        kill_when(
            proc,
            lambda: (
                (run_dir / "pathways.jsonl").is_file()
                and (run_dir / "pathways.jsonl").read_text().count("\n") >= target
            ),
        )
        result = run_cli("synthesize", *args)
        assert result.returncode == 0, result.stderr[-3000:]
    ids = [json.loads(line)["id"] for line in (run_dir / "pathways.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(q.id for q in quickstart.generate("train", LIMIT))
    cache = [
        json.loads(line)["key"] for line in (tmp_path / "cache.jsonl").read_text().splitlines()
    ]
    assert len(cache) == len(set(cache))  # no finished request paid twice
    assert len(ROLES) >= 3


def test_a_flaky_api_at_30_percent_faults_loses_no_question(tiny_server_engine, tmp_path):
    n = 16
    with ChatServer(tiny_server_engine, fault_rate=0.3, seed=7) as server:
        overrides = [
            "logger=none",
            "engine=openai",
            f"engine.base_url={server.url}",
            "engine.served_model=tiny",
            "engine.max_new_tokens=16",
            "engine.concurrency=4",
            "engine.max_retries=10",
            "engine.timeout_s=1",
            "engine.backoff_s=0.01",
            "engine.max_backoff_s=0.05",
            f"engine.cache_path={tmp_path / 'cache.jsonl'}",
            "benchmark=quickstart",
            f"benchmark.tasks.quickstart.limit={n}",
        ]
        metrics = execute(
            "evaluate", compose_config("evaluate", overrides), tmp_path / "run", overrides
        ).metrics
    assert sorted(prediction_ids(tmp_path / "run")) == sorted(
        q.id for q in quickstart.generate("test", n)
    )
    assert server.seen["ok"] == n and "mean_accuracy" in metrics
    assert server.injected() >= 4 and len({t for t in server.seen if t != "ok"}) >= 3, server.seen
    print(
        f"flaky API: {server.injected()} faults injected {dict(server.seen)}, {n} questions, 0 lost"
    )


def test_a_flaky_api_in_a_data_job_marks_what_failed_with_its_reason(tmp_path):
    from test_synthesis import LIMIT, ROLES, ScriptedClinician, job, over_http

    with ChatServer(ScriptedClinician(), fault_rate=0.5, seed=3) as server:
        roles = over_http(server.url, tmp_path) + [f"roles.{r}.engine.max_retries=1" for r in ROLES]
        roles += [f"roles.{r}.engine.backoff_s=0.01" for r in ROLES] + [
            f"roles.{r}.engine.timeout_s=1" for r in ROLES
        ]
        metrics = job("label", tmp_path / "run", *roles)
    records = [
        json.loads(line)
        for line in (tmp_path / "run" / "labeled.progress.jsonl").read_text().splitlines()
    ]
    assert (
        len(records) == len({r["id"] for r in records}) == LIMIT
    )  # every item: done or failed, once
    failed = [r for r in records if r["status"] == "failed"]
    assert metrics["label/failed"] == len(failed) and all(r["reason"] for r in failed)
    assert server.injected() > 0


# ---------------------------------------------------------------- storage and secrets


def test_an_unwritable_run_directory_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = compose_config("train", ["experiment=quickstart", "logger=none"])
    with pytest.raises(OSError, match=f"{blocker}/run is not writable"):
        execute("train", cfg, blocker / "run", [])


def test_too_little_free_disk_fails_before_any_work(tmp_path):
    result = run_cli(
        "train",
        "experiment=quickstart",
        "logger=none",
        "paths.min_free_gb=1e9",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode != 0
    assert "GB free, the job wants paths.min_free_gb=1e+09" in result.stderr
    assert not (tmp_path / "train_log.jsonl").exists() and not (tmp_path / "run.json").exists()


def test_an_api_key_reaches_no_file_log_or_wandb_record(tiny_server_engine, tmp_path):
    secret = "sk-reliability-secret-0123456789abcdef"
    with ChatServer(tiny_server_engine, api_key=secret) as server:
        args = (
            "logger=wandb",
            "logger.mode=offline",
            "engine=openai",
            f"engine.base_url={server.url}",
            "engine.served_model=tiny",
            "engine.max_new_tokens=8",
            f"engine.cache_path={tmp_path / 'run' / 'cache.jsonl'}",
            "benchmark=quickstart",
            "benchmark.tasks.quickstart.limit=4",
            f"hydra.run.dir={tmp_path / 'run'}",
        )
        result = run_cli("evaluate", *args, env={"OPENAI_API_KEY": secret})
        assert result.returncode == 0, result.stderr[-3000:]
        assert (
            server.seen["ok"] == 4 and server.seen["401"] == 0
        )  # the key was sent, and only there
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "cache.jsonl" for p in files)
    leaks = [p for p in files if secret.encode() in p.read_bytes()]
    assert not leaks, f"the key leaked into {leaks}"
    assert secret not in result.stdout + result.stderr


def test_a_training_log_line_cut_by_a_kill_is_dropped_on_resume(tmp_path):
    from citrus.train.checkpoint import forget_after

    log = tmp_path / "train_log.jsonl"
    log.write_text(
        '{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/loss": 1.5}\n{"step": 3, "train/lo'
    )
    forget_after(log, 2)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    forget_after(log, 0)  # a fresh start keeps nothing of an earlier attempt
    assert log.read_text() == ""
