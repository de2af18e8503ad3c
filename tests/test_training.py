"""Training on CPU: exact resume (SFT, CPO-SimPO, LoRA, packed SFT, DPO), packing without
cross-example attention, LoRA export, and configs that cannot train failing before any work."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import compose_config, exported, log_rows, train_run

from citrus.data import quickstart
from citrus.jobs import execute
from citrus.models import load_model, load_tokenizer
from citrus.train.data import PackedCollator, pack
from citrus.train.losses import token_nll_sum
from citrus.train.objectives import forward
from citrus.train.tokenize import tokenize_sft

TINY = (
    "experiment=quickstart",
    "logger=none",
    "trainer.micro_batch_size=2",
    "trainer.grad_accum_steps=2",
    "trainer.max_steps=6",
    "trainer.log_every=1",
    "trainer.checkpoint_every=2",
    "trainer.keep_checkpoints=0",
    "trainer.warmup_ratio=0.2",
)
SETUPS = {
    "sft": ["data.quickstart.n_train=32"],
    "sft_packed": ["data.quickstart.n_train=32", "trainer.packing=true", "model.max_length=700"],
    "cpo_simpo": [
        "data=quickstart_pairs",
        "data.quickstart.n_train=32",
        "algorithm=cpo_simpo",
        "trainer.lr=1e-3",
    ],
    "lora": ["data.quickstart.n_train=32", "adapter=lora", "adapter.dropout=0.1"],
    "dpo_lora": [
        "data=quickstart_pairs",
        "data.quickstart.n_train=32",
        "algorithm=dpo",
        "adapter=lora",
        "trainer.lr=1e-3",
    ],
}


def train(run_dir, overrides):
    return train_run(run_dir, [*TINY, *overrides])


def curve(run_dir):
    return [(r["step"], r["train/loss"]) for r in log_rows(run_dir)]


@pytest.mark.parametrize("setup", list(SETUPS))
def test_resumed_run_matches_uninterrupted_one(setup, tmp_path):
    """Resume from step 4 of a run into a fresh run dir: the same steps 5-6 and final weights."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    first = train(whole, SETUPS[setup])
    assert first["train/steps"] == 6 and [s for s, _ in curve(whole)] == [1, 2, 3, 4, 5, 6]
    checkpoint = whole / "checkpoints" / "step-000004"
    assert sorted(p.name for p in (whole / "checkpoints").iterdir()) == [
        "step-000002",
        "step-000004",
    ]
    shutil.copytree(checkpoint, resumed / "checkpoints" / "step-000004")
    again = train(resumed, [*SETUPS[setup], "trainer.resume=auto"])
    assert again["train/steps"] == 6
    assert curve(resumed) == [s for s in curve(whole) if s[0] > 4]  # bit-identical losses
    a, b = (
        exported(whole),
        exported(resumed),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any("lora" in k for k in a)  # adapters merged into a plain model


def test_resume_from_a_run_dir_and_resume_auto_on_a_fresh_run(tmp_path):
    base = train(tmp_path / "a", SETUPS["sft"])
    assert base["train/steps"] == 6
    fresh = train(
        tmp_path / "b", [*SETUPS["sft"], "trainer.resume=auto"]
    )  # nothing to resume: starts at 0
    assert [s for s, _ in curve(tmp_path / "b")][0] == 1
    with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
        train(tmp_path / "c", [*SETUPS["sft"], f"trainer.resume={tmp_path / 'nowhere'}"])
    assert fresh["train/final_loss"] == pytest.approx(base["train/final_loss"], rel=1e-6)


def test_sft_stages_chain_by_config(tmp_path):
    """Stage 2 starts from stage 1's export: `model.path=<stage-1 run dir>`."""
    first = train(tmp_path / "s1", SETUPS["sft"])
    second = train(
        tmp_path / "s2", [*SETUPS["sft"], f"model.path={tmp_path / 's1'}", "data.quickstart.seed=1"]
    )
    assert second["train/first_loss"] < first["train/first_loss"] - 0.5
    assert (
        f"model.path={tmp_path / 's1'}"
        in json.loads((tmp_path / "s2" / "run.json").read_text())["command"]
    )


def test_gradient_checkpointing_and_bf16_train_the_same_curve(tmp_path):
    plain = train(tmp_path / "plain", SETUPS["sft"])
    recomputed = train(tmp_path / "ckpt", [*SETUPS["sft"], "trainer.gradient_checkpointing=true"])
    assert [loss for _, loss in curve(tmp_path / "ckpt")] == pytest.approx(
        [loss for _, loss in curve(tmp_path / "plain")], rel=1e-5
    )
    assert recomputed["train/final_loss"] == pytest.approx(plain["train/final_loss"], rel=1e-5)
    bf16 = train(tmp_path / "bf16", [*SETUPS["sft"], "trainer.precision=bf16-mixed"])
    assert bf16["train/final_loss"] == pytest.approx(
        plain["train/final_loss"], rel=0.05
    )  # autocast: close, not equal


def test_half_written_checkpoint_is_never_loaded(tmp_path):
    train(tmp_path, SETUPS["sft"])
    (tmp_path / "checkpoints" / "step-000006.tmp").mkdir()  # a save cut short by a kill
    (tmp_path / "checkpoints" / "step-000008").mkdir()  # a directory without its state file
    from citrus.train.checkpoint import find_checkpoint

    assert find_checkpoint("auto", tmp_path).name == "step-000004"


def test_packed_rows_score_like_separate_examples():
    cfg = compose_config("train", ["experiment=quickstart"])
    tokenizer, model = load_tokenizer(cfg.model), load_model(cfg.model).eval()
    records = [
        quickstart.to_sft_record(q, "quickstart") for q in quickstart.generate("train", 5, seed=2)
    ]
    examples = [tokenize_sft(r, tokenizer, 1024) for r in records]
    rows = pack(examples, 1024)
    assert len(rows) < len(examples) and sum(len(r["input_ids"]) for r in rows) == sum(
        len(e["input_ids"]) for e in examples
    )
    batch = PackedCollator(tokenizer.pad_token_id)(rows)
    with torch.no_grad():
        packed, n_packed = token_nll_sum(forward(model, batch), batch["labels"])
        alone = [
            token_nll_sum(
                forward(model, {"input_ids": torch.tensor([e["input_ids"]])}),
                torch.tensor([e["labels"]]),
            )
            for e in examples
        ]
    assert int(n_packed) == sum(int(n) for _, n in alone)
    assert float(packed) == pytest.approx(sum(float(s) for s, _ in alone), rel=1e-4)
    # without the restarted positions, examples would attend across the boundary and score
    # differently
    with torch.no_grad():
        leaky, _ = token_nll_sum(forward(model, {"input_ids": batch["input_ids"]}), batch["labels"])
    assert float(leaky) != pytest.approx(float(packed), rel=1e-3)


def test_packed_attention_matches_the_masked_kernel():
    """citrus_packed (per-example causal attention) gives sdpa-with-block-mask logits and grads."""
    from citrus.train import packed_attention

    cfg = compose_config("train", ["experiment=quickstart"])
    tokenizer = load_tokenizer(cfg.model)
    examples = [
        tokenize_sft(quickstart.to_sft_record(q, "quickstart"), tokenizer, 1024)
        for q in quickstart.generate("train", 7, seed=4)
    ]
    batch = PackedCollator(tokenizer.pad_token_id)(pack(examples, 1024))
    results = []
    for attention in ("sdpa", packed_attention.NAME):
        model = load_model(cfg.model)
        model.config._attn_implementation = attention
        loss, _ = token_nll_sum(forward(model, batch), batch["labels"])
        loss.backward()
        results.append(
            (float(loss.detach()), model.model.layers[0].self_attn.q_proj.weight.grad.clone())
        )
    (masked, g1), (packed, g2) = results
    assert packed == pytest.approx(masked, rel=1e-5)
    assert torch.allclose(g1, g2, atol=1e-5, rtol=1e-4)


GRPO = ("data=quickstart_rl",)
BAD = [
    (["algorithm=dpo"], "trains on preference records"),
    (["data.truncation=middle"], "data.truncation='middle'"),
    (["data.max_prompt_length=2000"], "data.max_prompt_length=2000 must be below"),
    (["trainer.precision=16-mixed"], "trainer.precision='16-mixed'"),
    (["data=quickstart_pairs"], "trains on sft records"),
    (["data=quickstart_pairs", "algorithm=cpo", "trainer.packing=true"], "only sft packs"),
    (
        ["data=quickstart_pairs", "algorithm=cpo", "algorithm.loss=robust"],
        "algorithm.loss='robust'",
    ),
    (["trainer.micro_batch_size=4", "trainer.global_batch_size=10"], "not a multiple"),
    (
        [
            "trainer.micro_batch_size=4",
            "trainer.global_batch_size=16",
            "trainer.grad_accum_steps=2",
        ],
        "needs grad_accum_steps=4",
    ),
    (["algorithm.reference=/x"], "uses no reference model"),
    (["trainer.strategy=fsdp"], "trainer.strategy='fsdp'"),
    (["adapter.name=qlora"], "adapter.name='qlora'"),
    (["adapter=lora", "trainer=fsdp2"], "not supported yet"),
    (["data=citrus_s1"], "citrus_s1.jsonl does not exist"),
    (["algorithm=grpo"], "trains on prompt records"),
    (["algorithm=grpo", *GRPO, "algorithm.num_generations=1"], "a group needs 2 or more"),
    (["algorithm=grpo", *GRPO, "algorithm.loss_type=bnpo"], "algorithm.loss_type='bnpo'"),
    (["algorithm=grpo", *GRPO, "algorithm.scale_rewards=rank"], "scale_rewards='rank'"),
    (
        ["algorithm=grpo", *GRPO, "algorithm.num_iterations=3", "trainer.checkpoint_every=4"],
        "a multiple of it",
    ),  # fmt: skip
    (["algorithm=grpo", *GRPO, "data.val_ratio=0.1"], "no validation loss"),
    (["algorithm=grpo", *GRPO, "+reward.weights.exact=1.0"], "components from"),
    (["algorithm=grpo", *GRPO, "engine=openai"], "cannot sample rollouts"),
    (["algorithm=grpo", *GRPO, "data.max_length=200"], "leaves no room for a prompt"),
    (["algorithm=grpo", *GRPO, "data.max_length=300"], "tokens leave no room for"),
    (
        ["algorithm=grpo", *GRPO, "reward=letter_format", "algorithm.max_new_tokens=32"],
        "reward.length_cache=64",
    ),  # fmt: skip
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[m for _, m in BAD])
def test_configs_that_cannot_train_fail_first(overrides, message, tmp_path):
    cfg = compose_config("train", ["experiment=quickstart", "logger=none", *overrides])
    with pytest.raises(ValueError, match=message):
        execute("train", cfg, tmp_path, overrides)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "train_log.jsonl").exists()
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"


def test_varlen_offsets_match_the_example_bounds():
    """The cu_seqlens of the CUDA varlen path: every example's start in the flattened batch,
    then its end, as the CPU path's per-row segments place them."""
    from citrus.train import packed_attention

    tokenizer = load_tokenizer(compose_config("train", ["experiment=quickstart"]).model)
    examples = [
        tokenize_sft(quickstart.to_sft_record(q, "quickstart"), tokenizer, 1024)
        for q in quickstart.generate("train", 9, seed=3)
    ]
    positions = PackedCollator(tokenizer.pad_token_id)(pack(examples, 700))["position_ids"]
    width = positions.shape[1]
    expected = [r * width + s for r, spans in enumerate(packed_attention.segments(positions))
                for s, _ in spans] + [positions.numel()]  # fmt: skip
    cu = packed_attention.cumulative_lengths(positions)
    assert cu.dtype == torch.int32 and cu.tolist() == expected
