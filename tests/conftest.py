"""Shared fixtures: one cache directory per test session (tiny backbones are built once), and
config composition through the real conf/ tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from citrus.config import CONF_DIR, register_configs

REPO = Path(__file__).resolve().parents[1]

# The suite sets the environment it needs: a user's shell (a cluster's, often) may carry any of
# these, and each would change what the tests exercise (an offline hub, a real W&B project, a GPU).
_FOREIGN = (
    "TRANSFORMERS_OFFLINE", "CUDA_VISIBLE_DEVICES", "OPENAI_API_KEY", "OPENAI_BASE_URL",
    "VLLM_API_KEY", "CITRUS_CACHE", "CITRUS_OUTPUTS", "CITRUS_PROGRESS", "ATEN_CPU_CAPABILITY",
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
)  # fmt: skip
for _var in list(os.environ):
    if _var in _FOREIGN or _var.startswith(("HF_", "WANDB_", "SLURM_")):
        os.environ.pop(_var)
if "huggingface_hub" in sys.modules:  # imported before this file (a plugin): constants are read
    sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = False

# The benchmark files ($CITRUS_BENCHMARKS, else ../shared/benchmarks/citrus-repo, as the presets
# read them). Absent, their tests skip on a developer's machine; in CI (CI=true) the run stops at
# once: a missing data root is a failure.
ROOT = Path(
    os.environ.get("CITRUS_BENCHMARKS", REPO.parent / "shared" / "benchmarks" / "citrus-repo")
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true")
needs_files = pytest.mark.skipif(
    not ROOT.is_dir(), reason=f"benchmark files not found at {ROOT} (set CITRUS_BENCHMARKS)"
)


def pytest_sessionstart(session) -> None:
    if IN_CI and not ROOT.is_dir():
        pytest.exit(f"CI=true and no benchmark files at {ROOT} (set CITRUS_BENCHMARKS)", 1)


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    """CITRUS_CACHE for the whole session; CITRUS_TEST_CACHE keeps builds between sessions."""
    path = Path(os.environ.get("CITRUS_TEST_CACHE") or tmp_path_factory.mktemp("citrus-cache"))
    os.environ["CITRUS_CACHE"] = str(path)
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return path


def compose_config(job: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"job={job}", *overrides])


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """The installed `citrus` command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "citrus.cli", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# A few-second SFT + evaluate: tiny batch, few steps, short generations, no W&B.
SMOKE = (
    "experiment=quickstart",
    "logger=none",
    "data.quickstart.n_train=48",
    "trainer.micro_batch_size=4",
    "trainer.grad_accum_steps=2",
    "trainer.max_steps=6",
    "trainer.log_every=2",
    "trainer.checkpoint_every=3",
    "benchmark.tasks.quickstart.limit=6",
    "engine.max_new_tokens=24",
    "engine.batch_size=4",
)


# SMOKE as a pipeline that logs to W&B (offline here), its preference stage on the quickstart pairs
SMOKE_PIPELINE = (
    *[a for a in SMOKE if a != "logger=none"],
    "logger=wandb",
    "pipeline.preference.data=quickstart_pairs",
    "pipeline.preference.data_params.val_ratio=0",  # the preset holds out 15%: 300 pairs here
    "+pipeline.preference.trainer.micro_batch_size=2",
)


def train_run(run_dir: Path, overrides: list[str] | tuple[str, ...]) -> dict:
    """`citrus train` with `overrides`, in `run_dir`: its final metrics."""
    from citrus.jobs import execute

    overrides = list(overrides)
    return execute("train", compose_config("train", overrides), run_dir, overrides).metrics


def log_rows(run_dir: Path) -> list[dict]:
    """Every logged step of a training run (train_log.jsonl)."""
    import json

    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def exported(run_dir: Path) -> dict:
    """The weights a training run exported (model/model.safetensors)."""
    from safetensors.torch import load_file

    return load_file(run_dir / "model" / "model.safetensors")


# GRPO from a policy that already answers: the tiny Llama after a short SFT on one-line replies
# ("<think>text</think><answer>X</answer>", a dozen tokens), right on some questions and wrong on
# others, so a group's rewards differ and GRPO has advantages to learn from.
GRPO_SMOKE = (
    "algorithm=grpo",
    "data=quickstart_rl",
    "algorithm.max_new_tokens=24",
    "algorithm.num_generations=4",
    "trainer.lr=3e-5",  # the quickstart's 2e-3 SFT step breaks the policy in one RL step
)


@pytest.fixture(scope="session")
def answering_policy(tmp_path_factory) -> Path:
    """The exported model of that short SFT (built once per session)."""
    import json

    from citrus.data import quickstart

    out = tmp_path_factory.mktemp("answering")
    records = []
    for q in quickstart.generate("train", 400, seed=0):
        record = quickstart.to_sft_record(q, "quickstart")
        reply = f"<think>{q.answer_text}</think><answer>{q.answer}</answer>"
        records.append({**record, "messages": [*record["messages"][:-1],
                        {"role": "assistant", "content": reply}]})  # fmt: skip
    path = out / "one_line.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    train_run(out / "run", ["experiment=quickstart", "logger=none", f"data.path={path}",
                            "trainer.max_steps=50", "trainer.checkpoint_every=0"])  # fmt: skip
    return out / "run" / "model"
