"""Real jobs on CPU: a short SFT, evaluation of its export, the run record, the CLI, multirun."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SMOKE, compose_config, run_cli
from transformers import AutoModelForCausalLM, AutoTokenizer

from citrus.jobs import execute
from citrus.record import md5sum

SECRET = "sk-citrus-test-secret-0123456789"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train")
    cfg = compose_config("train", SMOKE)
    metrics = execute("train", cfg, run_dir, list(SMOKE)).metrics
    return run_dir, metrics


def test_sft_learns_checkpoints_and_exports_a_loadable_model(trained):
    run_dir, metrics = trained
    assert metrics["train/steps"] == 6
    assert metrics["train/final_loss"] < metrics["train/first_loss"] - 0.5
    ckpt = (
        run_dir / "checkpoints" / "step-000003"
    )  # self-describing: state, config, tokenizer, run record
    state = torch.load(ckpt / "state.ckpt", weights_only=False)
    assert state["step"] == 3 and {"model", "optimizer", "scheduler", "rng"} <= set(state)
    assert (
        AutoTokenizer.from_pretrained(ckpt).chat_template
        and "max_steps: 6" in (ckpt / "citrus_config.yaml").read_text()
    )
    assert json.loads((ckpt / "run.json").read_text())["job"] == "train"
    model_dir = run_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert type(model).__name__ == "LlamaForCausalLM" and tok.chat_template
    assert tok.eos_token_id in (
        model.generation_config.eos_token_id
        if isinstance(model.generation_config.eos_token_id, list)
        else [model.generation_config.eos_token_id]
    )
    assert "name: quickstart" in (model_dir / "citrus_config.yaml").read_text()
    assert json.loads((run_dir / "metrics.json").read_text())["train/steps"] == 6


def test_training_is_deterministic(trained, tmp_path):
    _, first = trained
    cfg = compose_config("train", SMOKE)
    again = execute("train", cfg, tmp_path, list(SMOKE)).metrics
    assert again["train/final_loss"] == pytest.approx(first["train/final_loss"], rel=1e-6)


def test_run_record_reproduces_the_run_and_fingerprints_its_data(trained):
    run_dir, _ = trained
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["command"] == "citrus train " + " ".join(SMOKE)
    assert record["seeds"]["seed"] == 1234 and record["seeds"]["model.build.init_seed"] == 0
    assert {"python", "torch", "transformers", "lightning", "hydra-core"} <= set(record["versions"])
    assert set(record["git"]) == {"commit", "dirty"}
    ((path, entry),) = record["inputs"].items()
    assert entry["role"] == "data/quickstart" and entry["md5"] == md5sum(path)


def test_evaluate_scores_every_question_and_keeps_raw_responses(trained, tmp_path):
    run_dir, _ = trained
    overrides = [*SMOKE, f"model.path={run_dir}"]  # a run directory stands for its exported model
    result = execute("evaluate", compose_config("evaluate", overrides), tmp_path, overrides).metrics
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    task = metrics["tasks"]["quickstart"]
    assert (
        task["n"] == 6 and 0.0 <= task["accuracy"] <= 1.0 and task["chance"] == pytest.approx(0.25)
    )
    assert result["mean_accuracy"] == task["accuracy"]
    assert (
        metrics["prompt"] == "quickstart"
        and metrics["extractor_version"]
        and metrics["seed"] == 1234
    )
    assert metrics["sampling"]["max_new_tokens"] == 24 and metrics["sampling"]["temperature"] == 0.0
    ((path, digest),) = metrics["data_md5"]["quickstart"].items()
    assert digest == md5sum(path)
    assert (
        task["ci95_low"] <= task["accuracy"] <= task["ci95_high"]
        and task["invalid_rate"] == 1 - task["extracted"]
    )
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    assert all(
        r["rule"] in {"answer_tag", "answer_is", "bare_letter", "option_text", "none"} for r in rows
    )
    assert sum(r["correct"] for r in rows) / 6 == pytest.approx(task["accuracy"])
    assert all(isinstance(r["response"], str) and r["prompt"][-1]["role"] == "user" for r in rows)
    inputs = json.loads((tmp_path / "run.json").read_text())["inputs"]
    assert [v["role"] for v in inputs.values()] == ["benchmark/quickstart"]


def test_cli_train_with_wandb_offline_keeps_secrets_out(tmp_path):
    env = {
        "OPENAI_API_KEY": SECRET,
        "WANDB_API_KEY": SECRET,
        "WANDB_MODE": "offline",
        "HF_TOKEN": SECRET,
    }
    args = [a for a in SMOKE if a != "logger=none"] + [
        "logger=wandb",
        f"paths.output_dir={tmp_path}",
        "hydra.run.dir=" + str(tmp_path / "run"),
    ]
    result = run_cli("train", *args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["command"].startswith(
        "citrus train experiment=quickstart"
    )
    offline = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert offline, "W&B offline run files were not written"
    wandb = record["wandb"]
    assert wandb["mode"] == "offline" and wandb["group"] == "quickstart"
    assert {"job:train", "model:tiny_llama", "data:quickstart", "algorithm:sft"} <= set(
        wandb["tags"]
    )
    logged = offline[0].read_bytes()
    assert b"data-quickstart" in logged  # the training data, as a dataset artifact
    assert (
        b"quickstart-model" in logged and (run_dir / "model").resolve().as_uri().encode() in logged
    )  # the export, by reference
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"secret leaked into {path}"
    assert SECRET not in result.stdout + result.stderr


def test_multirun_survives_a_failing_job_and_records_both(tmp_path):
    result = run_cli(
        "prepare",
        "-m",
        "logger=none",
        "data.quickstart.n_train=16",
        "benchmark.tasks.quickstart.limit=4",
        "data.path=/nonexistent/train.jsonl,null",
        f"paths.output_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = sorted(tmp_path.glob("multirun/prepare/*/*/*/run.json"))
    assert len(records) == 2
    by_status = {json.loads(p.read_text())["status"]: json.loads(p.read_text()) for p in records}
    assert set(by_status) == {"failed", "completed"}
    assert "/nonexistent/train.jsonl does not exist" in by_status["failed"]["error"]
    done = by_status["completed"]
    assert "data.path=null" in done["command"] and done["command"].endswith(
        "hydra.mode=RUN"
    )  # reruns alone
    assert (
        done["sweep"]["job_num"] == 1
        and str(tmp_path / "multirun" / "prepare") in done["sweep"]["dir"]
    )


def test_sampled_evaluation_reports_pass_at_1_and_majority_vote(trained, tmp_path):
    run_dir, _ = trained
    overrides = [*SMOKE, f"model.path={run_dir}", "engine.temperature=1.0", "engine.num_samples=3"]
    execute("evaluate", compose_config("evaluate", overrides), tmp_path, overrides)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["samples"]) == 3 for r in rows)  # whole questions only
    assert any(len({s["response"] for s in r["samples"]}) > 1 for r in rows), (
        "samples should differ"
    )
    task = json.loads((tmp_path / "metrics.json").read_text())["tasks"]["quickstart"]
    per_sample = [s["pred"] == r["gold"] for r in rows for s in r["samples"]]
    assert task["accuracy"] == pytest.approx(sum(per_sample) / 18)
    assert task["majority_vote_accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 6)
