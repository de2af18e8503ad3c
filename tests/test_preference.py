"""Preference losses against TRL's own implementations (trl.DPOTrainer; CPOTrainer and
ORPOTrainer from trl.experimental), on the same tiny model, the same pairs and the same batch.

CPO, SimPO and ORPO run in float64 on both sides and agree to TOL. TRL's DPO computes its
log-probs in float32 whatever the model's dtype, so DPO is compared in float32 with DPO_RTOL: a
reply's summed log-prob (here ~100 tokens, |sum| ~ 500 nats) summed in another order differs by
~sqrt(100) x 6e-8 x 500 = 3e-4 nats; through beta = 0.1 and four such sums per pair that is ~1e-4
of a ~0.7 loss. A 1e-6 float32 tolerance passed here and failed on another machine for exactly
this reason; a wrong formula moves the loss by percent, far outside it."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import compose_config
from datasets import Dataset
from omegaconf import OmegaConf

from citrus.data import quickstart
from citrus.models import load_model, load_tokenizer
from citrus.train.data import PairCollator
from citrus.train.losses import IGNORE
from citrus.train.objectives import OBJECTIVES, forward
from citrus.train.tokenize import tokenize_pair

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
N = 4
TOL = 1e-9
DPO_RTOL = 1e-4
CHUNK = 37  # tokens per chunk of the output head: several per batch, one cut mid-row
CPO_LOSSES = {"sigmoid": "cpo", "hinge": "cpo_hinge", "ipo": "cpo_ipo", "simpo": "simpo"}
DPO_LOSSES = {"sigmoid": "dpo", "hinge": "dpo_hinge", "ipo": "ipo", "apo_zero": "apo_zero"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = compose_config("train", ["data=quickstart_pairs", "algorithm=cpo"])
    tokenizer = load_tokenizer(cfg.model)
    records = [
        quickstart.to_preference_record(q, "quickstart")
        for q in quickstart.generate("train", N, seed=1)
    ]
    rows = Dataset.from_list(
        [
            {
                "prompt": r["messages"],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in records
        ]
    )
    return cfg, tokenizer, records, rows, tmp_path_factory.mktemp("trl")


def models(cfg, dtype=torch.float64):
    """A fresh reference and a policy that has moved away from it (TRL's trainers patch the
    models they are given, so each test gets its own)."""
    reference = load_model(cfg.model).eval().to(dtype)
    policy = load_model(cfg.model).to(dtype)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.02)
    return policy, reference


def pad_pairs(chosen_ids, chosen_labels, rejected_ids, rejected_labels, pad_id):
    """TRL's chosen/rejected tensors as one [chosen; rejected] batch, the layout citrus uses."""
    width = max(chosen_ids.shape[1], rejected_ids.shape[1])
    pad = lambda t, value: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)  # noqa: E731
    ids = torch.cat([pad(chosen_ids, pad_id), pad(rejected_ids, pad_id)])
    labels = torch.cat([pad(chosen_labels, IGNORE), pad(rejected_labels, IGNORE)])
    return {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": (labels != IGNORE) | (ids != pad_id),
    }


def ours(algorithm: str, overrides: dict, policy, batch, reference=None):
    algo = OmegaConf.merge(compose_config("train", [f"algorithm={algorithm}"]).algorithm, overrides)
    batch = {**batch, "attention_mask": batch["attention_mask"].long()}
    ref = (lambda b: forward(reference, b)) if reference else None
    objective = OBJECTIVES[algo.loss]
    # several chunks of the output head, so TRL's full-vocabulary log-softmax checks them too
    scorer = lambda b: forward(policy, b, chunk_size=CHUNK)  # noqa: E731
    loss, metrics = objective(scorer, batch, objective.counts([batch]), algo, ref)
    return float(loss), metrics


def cpo_batch(trainer):
    b = trainer.data_collator([trainer.train_dataset[i] for i in range(N)])
    return b, pad_pairs(
        b["chosen_input_ids"],
        b["chosen_labels"],
        b["rejected_input_ids"],
        b["rejected_labels"],
        trainer.processing_class.pad_token_id,
    )


@pytest.mark.parametrize(
    "loss_type,label_smoothing",
    [("sigmoid", 0.0), ("sigmoid", 0.1), ("hinge", 0.0), ("ipo", 0.0), ("simpo", 0.0)],
)
def test_cpo_matches_trl(setup, loss_type, label_smoothing):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    cfg, tokenizer, _, rows, out = setup
    policy, _ = models(cfg)
    beta, gamma, alpha = (10.0, 5.4, 0.05) if loss_type == "simpo" else (0.1, 0.5, 1.0)
    args = CPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=N,
        report_to=[],
        use_cpu=True,
        max_length=1024,
        beta=beta,
        loss_type=loss_type,
        simpo_gamma=gamma,
        cpo_alpha=alpha,
        label_smoothing=label_smoothing,
    )
    trainer = CPOTrainer(model=policy, args=args, train_dataset=rows, processing_class=tokenizer)
    trl_batch, batch = cpo_batch(trainer)
    with torch.no_grad():
        trl_loss, trl_metrics = trainer.get_batch_loss_metrics(policy, trl_batch)
        loss, metrics = ours(
            "cpo",
            {
                "loss": CPO_LOSSES[loss_type],
                "beta": beta,
                "simpo_gamma": gamma,
                "cpo_alpha": alpha,
                "label_smoothing": label_smoothing,
            },
            policy,
            batch,
        )
    assert loss == pytest.approx(float(trl_loss), abs=TOL, rel=TOL)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert metrics[key] == pytest.approx(trl_metrics[key], abs=TOL, rel=TOL), key
    assert metrics["nll"] == pytest.approx(trl_metrics["nll_loss"], rel=TOL)


def test_orpo_matches_trl(setup):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    cfg, tokenizer, _, rows, out = setup
    policy, _ = models(cfg)
    args = ORPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=N,
        report_to=[],
        use_cpu=True,
        max_length=1024,
        beta=0.1,
    )
    trainer = ORPOTrainer(model=policy, args=args, train_dataset=rows, processing_class=tokenizer)
    trl_batch, batch = cpo_batch(trainer)
    with torch.no_grad():
        trl_loss, trl_metrics = trainer.get_batch_loss_metrics(policy, trl_batch)
        loss, metrics = ours("orpo", {"beta": 0.1}, policy, batch)
    assert loss == pytest.approx(float(trl_loss), abs=TOL, rel=TOL)
    # TRL's ORPO logs its rewards as float32 before taking their difference: rewards of size
    # |r| <= 1 then carry up to one float32 ulp (1.2e-7) each, whatever precision ran
    assert metrics["rewards/margins"] == pytest.approx(
        float(trl_metrics["rewards/margins"]), abs=2 * torch.finfo(torch.float32).eps
    )
    assert metrics["rewards/margins"] != 0.0


@pytest.mark.parametrize("loss_type", list(DPO_LOSSES))
def test_dpo_matches_trl(setup, loss_type):
    from trl import DPOConfig, DPOTrainer

    cfg, tokenizer, _, rows, out = setup
    policy, reference = models(cfg, torch.float32)
    args = DPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=N,
        report_to=[],
        use_cpu=True,
        max_length=None,
        beta=0.1,
        loss_type=[loss_type],
    )
    trainer = DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=rows, processing_class=tokenizer
    )
    b = trainer.data_collator([trainer.train_dataset[i] for i in range(N)])
    labels = b["input_ids"].masked_fill(b["completion_mask"] == 0, IGNORE)
    batch = {"input_ids": b["input_ids"], "labels": labels, "attention_mask": b["attention_mask"]}
    with torch.no_grad():
        trl_loss = trainer._compute_loss(policy, b, return_outputs=False)
        loss, metrics = ours(
            "dpo", {"loss": DPO_LOSSES[loss_type], "beta": 0.1}, policy, batch, reference
        )
    assert loss == pytest.approx(float(trl_loss), rel=DPO_RTOL)
    logged = trainer._metrics["train" if policy.training else "eval"]
    assert metrics["rewards/margins"] != 0.0  # the policy has moved: a real comparison
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert metrics[key] == pytest.approx(logged[key][-1], abs=1e-6, rel=DPO_RTOL), key


@pytest.mark.parametrize("cut", [0, 24], ids=["whole", "replies_cut"])
def test_pairs_tokenize_as_trl_does(setup, cut):
    """The same ids and labels as TRL's CPOTrainer, also when a pair is over max_length and its
    replies are cut at their end to fit (data.truncation with no max_prompt_length)."""
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    cfg, tokenizer, records, rows, out = setup
    policy, _ = models(cfg)
    whole = [tokenize_pair(r, tokenizer, 1024) for r in records]
    prompt = max(e["chosen"]["labels"].count(IGNORE) for e in whole)
    max_length = prompt + cut if cut else 1024
    args = CPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=N,
        report_to=[],
        use_cpu=True,
        max_length=max_length,
    )
    trainer = CPOTrainer(model=policy, args=args, train_dataset=rows, processing_class=tokenizer)
    _, theirs = cpo_batch(trainer)
    pairs = [tokenize_pair(r, tokenizer, max_length, "left") for r in records]
    assert sum("truncated" in p for p in pairs) == (N if cut else 0)
    mine = PairCollator(tokenizer.pad_token_id)(pairs)
    width = min(theirs["input_ids"].shape[1], mine["input_ids"].shape[1])
    real = mine["attention_mask"].bool()
    assert torch.equal(
        mine["input_ids"][real], theirs["input_ids"][:, : mine["input_ids"].shape[1]][real]
    )
    assert torch.equal(mine["labels"][:, :width], theirs["labels"][:, :width])
