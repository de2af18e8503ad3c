"""Evaluation during training: held-out records' loss every trainer.val_every steps and a small
likelihood benchmark, on the training loss's step axis, in one and in two processes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import compose_config, log_rows, run_cli, train_run

from citrus.data.schema import DataError, load_records
from citrus.train.data import held_out
from citrus.train.tokenize import tokenize_sft

BASE = (
    "experiment=quickstart",
    "logger=none",
    "data.quickstart.n_train=40",
    "trainer.micro_batch_size=4",
    "trainer.max_steps=4",
    "trainer.log_every=1",
    "trainer.accelerator=cpu",
)


def validation_rows(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in log_rows(run_dir) if "train/val/loss" in r}


def nll_of_exported_model(model_dir: Path, records: list[dict]) -> float:
    """Mean next-token NLL over the reply tokens of `records`, under the model in model_dir, with
    plain transformers: the loss the validation logged at the last step (or at step 0, for the
    model training started from)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    total, count = 0.0, 0
    for record in records:
        example = tokenize_sft(record, tokenizer, 1024)
        ids, labels = torch.tensor([example["input_ids"]]), torch.tensor([example["labels"]])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        targets = labels[0, 1:]
        keep = targets != -100
        nll = torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum")
        total += float(nll)
        count += int(keep.sum())
    return total / count


def held_out_records(cfg_overrides: list[str]) -> list[dict]:
    from citrus.data.prepare import training_file

    cfg = compose_config("train", cfg_overrides)
    records = load_records(training_file(cfg.data, cfg.paths.data_dir), cfg.data.format)
    return held_out(records, cfg.data.val_ratio, cfg.seed)[1]


@pytest.mark.parametrize("packing", [False, True])  # packed rows train; validation never packs
def test_held_out_records_leave_training_and_the_loss_is_the_exported_models(tmp_path, packing):
    overrides = [*BASE, "data.val_ratio=0.25", "trainer.val_every=2", f"trainer.packing={packing}"]
    metrics = train_run(tmp_path, overrides)
    val = validation_rows(tmp_path)
    assert sorted(val) == [0, 2, 4]  # before any update, every val_every steps, the last one
    records = held_out_records(overrides)
    assert len(records) == 10  # a quarter of 40, held out of the 30 trained on
    expected = nll_of_exported_model(tmp_path / "model", records)
    assert val[4]["train/val/loss"] == pytest.approx(expected, rel=1e-4)
    start = nll_of_exported_model(Path(compose_config("train", overrides).model.path), records)
    assert val[0]["train/val/loss"] == pytest.approx(start, rel=1e-4)
    assert metrics["train/val/loss"] == val[4]["train/val/loss"]
    assert val[2]["train/val/loss"] != val[4]["train/val/loss"]


@pytest.mark.long  # two processes twice: ~30 s
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_log_the_loss_one_process_does(tmp_path, strategy):
    # 12 of 44 records held out, in micro-batches of 4: three batches over two ranks, one rank
    # short; the 32 trained on fill every step alike in both runs
    overrides = [*BASE, "data.quickstart.n_train=44", "data.val_ratio=0.273"]
    overrides += ["trainer.grad_accum_steps=2", "trainer.val_benchmark=true",
                  "benchmark.tasks.quickstart.limit=8"]  # fmt: skip
    one = train_run(tmp_path / "one", overrides)
    two_processes = [f"trainer={strategy}", "trainer.devices=2", "trainer.grad_accum_steps=1"]
    two = train_run(tmp_path / "two", [*overrides, *two_processes])
    assert two["train/val/loss"] == pytest.approx(one["train/val/loss"], rel=1e-5)
    # every process scores the benchmark (FSDP2's forward is collective); the same accuracy
    assert two["train/val/quickstart/accuracy"] == one["train/val/quickstart/accuracy"]


def test_a_small_likelihood_benchmark_scores_the_model_in_training(tmp_path):
    overrides = [
        *BASE,
        "data.val_ratio=0.1",
        "trainer.val_benchmark=true",
        "benchmark.tasks.quickstart.limit=12",
        "engine.batch_size=4",
    ]
    train_run(tmp_path, overrides)
    last = validation_rows(tmp_path)[4]
    # the same questions through `citrus evaluate` on the exported model
    result = run_cli(
        "evaluate",
        *overrides,
        "benchmark.mode=likelihood",
        "benchmark.prompt=mc_likelihood",
        f"model.path={tmp_path / 'model'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert last["train/val/quickstart/accuracy"] == evaluated["tasks"]["quickstart"]["accuracy"]


def test_preference_objectives_validate_their_rewards(tmp_path):
    run_dir = tmp_path / "cpo"
    train_run(
        run_dir,
        [*BASE, "data=quickstart_pairs", "algorithm=cpo_simpo", "data.val_ratio=0.25"],
    )
    last = validation_rows(run_dir)[4]
    assert {"train/val/rewards/accuracies", "train/val/rewards/margins"} <= set(last)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.val_ratio=1.5", "data.val_ratio=1.5: a share of the records in [0, 1)"),
        ("data.val_path=/nowhere/val.jsonl", "data.val_path: /nowhere/val.jsonl does not exist"),
    ],
)
def test_bad_validation_settings_fail_with_the_key(tmp_path, override, message):
    with pytest.raises(DataError, match=re.escape(message)):
        train_run(tmp_path, [*BASE, override])
