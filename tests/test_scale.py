"""Training as a 70B run needs it, on CPU: float32 master weights under bf16-mixed for a model
stored in bf16, a frozen reference that scores like the policy (DPO under DDP and FSDP2), each
process's own random state across a resume, the chunked output head, and truncation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import GRPO_SMOKE, compose_config, exported, log_rows, train_run
from safetensors.torch import load_file

from citrus.models import load_model, load_tokenizer
from citrus.train.objectives import OBJECTIVES

BASE = (
    "experiment=quickstart",
    "logger=none",
    "trainer.accelerator=cpu",
    "trainer.micro_batch_size=2",
    "trainer.log_every=1",
)


def train(run_dir: Path, *overrides: str) -> dict:
    return train_run(run_dir, [*BASE, *overrides])


@pytest.fixture(scope="module")
def bf16_model(tmp_path_factory) -> Path:
    """The tiny Llama as a hub checkpoint of a big model is: weights stored in bfloat16."""
    cfg = compose_config("train", ["experiment=quickstart"])
    out = tmp_path_factory.mktemp("bf16") / "model"
    load_model(cfg.model, "bfloat16").save_pretrained(out)
    load_tokenizer(cfg.model).save_pretrained(out)
    return out


def moved(before: dict, after: dict) -> float:
    """Share of the weight matrices' elements that differ."""
    keys = [k for k in before if before[k].ndim == 2]
    changed = sum(int((before[k] != after[k]).sum()) for k in keys)
    return changed / sum(before[k].numel() for k in keys)


@pytest.mark.parametrize(
    "strategy,precision,least,most",
    [
        ("auto", "bf16-mixed", 0.6, 1.0),
        ("auto", "bf16-true", 0, 0.4),
        ("fsdp2", "bf16-mixed", 0.6, 1.0),
    ],
)
def test_small_updates_survive_only_with_float32_master_weights(
    bf16_model, tmp_path, strategy, precision, least, most
):
    """lr 1e-5 on weights of ~0.02: bf16(w - 1e-5) == bf16(w) for most w, so pure bf16 loses
    most updates; float32 master weights keep them and the export rounds once, at the end
    (under FSDP2: float32 shards read from the bf16 files, bf16 gathered for compute)."""
    stored = {"model.path": bf16_model, "model.build": "null", "model.dtype": "bfloat16"}
    train(
        tmp_path,
        *(f"{k}={v}" for k, v in stored.items()),
        f"trainer.precision={precision}",
        f"trainer.strategy={strategy}",
        f"trainer.devices={1 if strategy == 'auto' else 2}",
        f"trainer.micro_batch_size={2 if strategy == 'auto' else 1}",  # 2 a step either way
        "data.quickstart.n_train=16",
        "trainer.max_steps=30",
        "trainer.lr=1e-5",
        "trainer.warmup_ratio=0",
        "trainer.min_lr_ratio=1",
    )
    before = exported(bf16_model.parent)
    after = exported(tmp_path)
    assert all(v.dtype == torch.bfloat16 for v in after.values())  # exported in model.dtype
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    share = moved(before, after)
    print(f"{strategy} {precision}: {share:.1%} of matrix elements moved")
    assert least <= share <= most


DPO = ("data=quickstart_pairs", "data.quickstart.n_train=8", "algorithm=dpo", "trainer.lr=1e-3")


@pytest.mark.parametrize(
    "strategy,precision",
    [("auto", "32-true"), ("auto", "bf16-mixed"), ("ddp", "bf16-mixed"), ("fsdp2", "32-true"),
     ("fsdp2", "bf16-mixed")],
)  # fmt: skip
def test_dpo_reference_scores_like_the_policy_at_the_first_step(tmp_path, strategy, precision):
    """The frozen reference runs as the policy does (precision, autocast, sharding; never
    wrapped in DDP), so every reward is exactly 0 before the first update, and not after."""
    devices = 1 if strategy == "auto" else 2
    train(
        tmp_path,
        *DPO,
        f"trainer.strategy={strategy}",
        f"trainer.devices={devices}",
        f"trainer.precision={precision}",
        "trainer.max_steps=2",
        "trainer.micro_batch_size=1",
    )
    first, second = log_rows(tmp_path)
    assert first["train/rewards/chosen"] == 0.0 and first["train/rewards/rejected"] == 0.0
    assert first["train/loss"] == pytest.approx(0.6931471805599453, abs=1e-6)  # -log σ(0)
    assert second["train/rewards/margins"] != 0.0


def test_lora_dropout_under_ddp_resumes_bit_for_bit(tmp_path):
    """Each process's dropout draws are its own; a run killed after its step-2 checkpoint and
    resumed equals the uninterrupted one exactly (losses and exported weights)."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run = (
        "trainer=ddp",
        "trainer.devices=2",
        "adapter=lora",
        "adapter.dropout=0.3",
        "data.quickstart.n_train=16",
        "trainer.max_steps=4",
        "trainer.checkpoint_every=2",
        "trainer.lr=1e-3",
    )
    train(whole, *run)
    shutil.copytree(whole / "checkpoints" / "step-000002", resumed / "checkpoints" / "step-000002")
    train(resumed, *run, "trainer.resume=auto")
    assert [r["train/loss"] for r in log_rows(resumed)] == [
        r["train/loss"] for r in log_rows(whole)[2:]
    ]
    a, b = exported(whole), exported(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.long
def test_two_process_fsdp2_load_holds_no_full_copy_per_process(tmp_path):
    """A ~570 MB float32 model loaded by two FSDP2 processes: each reads only its shards, so
    together they grow by about one copy; loaded whole per process, by two at least."""
    import os
    import subprocess
    import sys

    from omegaconf import OmegaConf

    from citrus.models import resolve_path

    cfg = compose_config(
        "train",
        [
            "experiment=quickstart",
            "trainer=fsdp2",
            f"model.path={tmp_path / 'model'}",
            "model.build.hidden_size=1024",
            "model.build.intermediate_size=4096",
            "model.build.num_hidden_layers=8",
            "model.build.num_attention_heads=16",
            "model.build.num_key_value_heads=16",
        ],
    )
    resolve_path(cfg.model)  # built once, before the processes start
    size_mb = sum(p.stat().st_size for p in (tmp_path / "model").glob("*.safetensors")) / 2**20
    config = tmp_path / "config.yaml"
    config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    growth = {}
    for how in ("sharded", "whole"):
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
             "--standalone", str(Path(__file__).parent / "fsdp2_load.py"), str(config), how],
            capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        growth[how] = sum(r["growth_mb"] for r in rows)
        assert len(rows) == 2
    print(f"model {size_mb:.0f} MB; host growth of both processes: {growth}")
    assert growth["sharded"] < 1.3 * size_mb
    assert growth["whole"] > 2 * size_mb


def test_the_logged_lr_is_the_one_each_step_used(tmp_path):
    """Warmup over 2 of 4 steps, then cosine to 0.1 x lr: steps use 1/2, 1, 1 and 0.55 x lr
    (read before the scheduler steps, not after)."""
    train(
        tmp_path,
        "data.quickstart.n_train=8",
        "trainer.max_steps=4",
        "trainer.lr=1e-3",
        "trainer.warmup_ratio=0.5",
        "trainer.min_lr_ratio=0.1",
    )
    logged = [r["train/lr"] for r in log_rows(tmp_path)]
    assert logged == pytest.approx([0.5e-3, 1e-3, 1e-3, 0.55e-3])


def test_safetensors_rows_read_as_safetensors_loads_them(bf16_model, tmp_path):
    """The reader FSDP2 loading uses: any row range of any tensor, in a sharded checkpoint
    (an index over several files) and in bf16, equals what safetensors itself loads."""

    from citrus.train.loading import SafetensorsFile, weight_files

    model = load_model(compose_config("train", ["experiment=quickstart"]).model)
    model.save_pretrained(tmp_path, max_shard_size="2MB")
    for directory in (tmp_path, bf16_model):
        files = weight_files(directory)
        expected = {k: v for f in set(files.values()) for k, v in load_file(f).items()}
        assert files.keys() == expected.keys()
        readers = {f: SafetensorsFile(f) for f in set(files.values())}
        for name, tensor in expected.items():
            rows = slice(1, max(2, len(tensor) // 3))
            got = readers[files[name]].read(name, rows)
            assert got.dtype == tensor.dtype and torch.equal(got, tensor[rows]), name
    assert len(set(weight_files(tmp_path).values())) > 1  # really sharded


@pytest.mark.long
@pytest.mark.parametrize("loss", sorted(OBJECTIVES))
def test_every_objective_trains_alike_on_one_two_ddp_and_two_fsdp2_processes(
    tmp_path, loss, request
):
    """Each loss over two processes (DDP, FSDP2) gives the curve one process gives with twice the
    accumulation: counts, references and metrics are summed over processes correctly. GRPO
    samples each micro-batch from the same seed either way (FSDP2: every rank generating until
    all are done), from a policy that answers, so its rewards and updates are not all zero."""
    data = "data=quickstart" if loss == "sft" else "data=quickstart_pairs"
    run = (data, "data.quickstart.n_train=16", f"algorithm.loss={loss}", "trainer.max_steps=3",
           "trainer.lr=1e-3")  # fmt: skip
    if loss == "grpo":
        policy = request.getfixturevalue("answering_policy")
        run = (*GRPO_SMOKE, "data.quickstart.n_train=16", f"model.path={policy}",
               "trainer.max_steps=3")  # fmt: skip
    curves = {}
    for strategy, devices, accumulation in (("auto", 1, 2), ("ddp", 2, 1), ("fsdp2", 2, 1)):
        out = tmp_path / strategy
        train(out, *run, f"trainer.strategy={strategy}", f"trainer.devices={devices}",
              f"trainer.grad_accum_steps={accumulation}")  # fmt: skip
        curves[strategy] = [r["train/loss"] for r in log_rows(out)]
    assert len(curves["auto"]) == 3
    assert curves["ddp"] == pytest.approx(curves["auto"], rel=1e-5)
    assert curves["fsdp2"] == pytest.approx(curves["auto"], rel=1e-5)
