"""Completion-only labels, the pad == eos trap, the loss and the schedule, on a real tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_config, train_run

from citrus.data import quickstart
from citrus.data.schema import DataError
from citrus.models import load_model, load_tokenizer
from citrus.train.data import Collator
from citrus.train.losses import IGNORE, next_token_logps, token_nll_sum
from citrus.train.objectives import forward
from citrus.train.schedule import warmup_cosine
from citrus.train.tokenize import tokenize_sft


@pytest.fixture(scope="module")
def model_cfg():
    return compose_config("train", ["model=tiny_llama"]).model


@pytest.fixture(scope="module")
def records():
    return [
        quickstart.to_sft_record(q, "citrus_expert")
        for q in quickstart.generate("train", 6, seed=5)
    ]


def test_labels_cover_exactly_the_reply_and_its_stop_token(model_cfg, records):
    tok = load_tokenizer(model_cfg)
    ex = tokenize_sft(records[0], tok, 2048)
    reply = records[0]["messages"][-1]["content"]
    n_prompt = sum(1 for label in ex["labels"] if label == IGNORE)
    assert ex["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert tok.decode(ex["input_ids"][n_prompt:]).startswith(reply)
    assert ex["labels"][-1] == tok.eos_token_id  # the model is taught to stop


def test_pad_equal_to_eos_never_masks_the_stop_token(model_cfg, records):
    tok = load_tokenizer(model_cfg)
    tok.pad_token = tok.eos_token  # what many hub tokenizers ship with
    examples = [tokenize_sft(r, tok, 2048) for r in records[:3]]
    batch = Collator(tok.pad_token_id)(examples)
    for row, ex in enumerate(examples):
        n = len(ex["input_ids"])
        assert batch["labels"][row, n - 1] == tok.eos_token_id
        assert (batch["labels"][row, n:] == IGNORE).all()
        assert batch["attention_mask"][row, :n].all() and not batch["attention_mask"][row, n:].any()


def test_full_sequence_loss_when_not_completion_only(model_cfg, records):
    tok = load_tokenizer(model_cfg)
    ex = tokenize_sft(records[0], tok, 2048, completion_only=False)
    assert ex["labels"] == ex["input_ids"]


def test_too_long_record_names_the_record(model_cfg, records):
    tok = load_tokenizer(model_cfg)
    with pytest.raises(
        DataError, match=rf"record '{records[0]['id']}': \d+ tokens exceed the limit of 64"
    ):
        tokenize_sft(records[0], tok, 64)


def test_token_nll_sum_matches_transformers_mean_loss(model_cfg, records):
    tok, model = load_tokenizer(model_cfg), load_model(model_cfg)
    batch = Collator(tok.pad_token_id)([tokenize_sft(r, tok, 2048) for r in records[:3]])
    with torch.no_grad():
        out = model(**batch)
        nll, n = token_nll_sum(next_token_logps(out.logits, batch["input_ids"]), batch["labels"])
    assert n == int((batch["labels"][:, 1:] != IGNORE).sum())
    assert torch.allclose(nll / n, out.loss, atol=1e-5)


def test_accumulated_loss_does_not_depend_on_the_split(model_cfg, records):
    tok, model = load_tokenizer(model_cfg), load_model(model_cfg)
    examples = [tokenize_sft(r, tok, 2048) for r in records[:4]]
    collate = Collator(tok.pad_token_id)
    with torch.no_grad():
        whole = token_nll_sum(forward(model, collate(examples)), collate(examples)["labels"])
        parts = [
            token_nll_sum(
                forward(model, collate(examples[i : i + 1])), collate(examples[i : i + 1])["labels"]
            )
            for i in range(4)
        ]
    assert torch.allclose(
        whole[0] / whole[1], sum(p[0] for p in parts) / sum(p[1] for p in parts), atol=1e-4
    )


def test_warmup_cosine_schedule():
    total, warmup = 100, 10
    values = [warmup_cosine(s, total, warmup, 0.1) for s in range(total + 1)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[warmup] == pytest.approx(1.0)
    assert values[total] == pytest.approx(0.1)
    assert values[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(values[warmup:], values[warmup + 1 :]))


def test_truncation_cuts_on_the_chosen_side(model_cfg, records):
    tok = load_tokenizer(model_cfg)
    whole = tokenize_sft(records[0], tok, 4096)
    n = len(whole["input_ids"]) - 40
    left = tokenize_sft(records[0], tok, n, truncation="left")
    right = tokenize_sft(records[0], tok, n, truncation="right")
    assert left["input_ids"] == whole["input_ids"][-n:] and left["labels"] == whole["labels"][-n:]
    assert left["input_ids"][-1] == whole["input_ids"][-1]  # the original Citrus cut keeps the end
    assert right["input_ids"] == whole["input_ids"][:n] and right["labels"] == whole["labels"][:n]
    assert left["truncated"] and right["truncated"] and "truncated" not in whole
    prompt = whole["labels"].count(IGNORE)
    with pytest.raises(DataError, match="nothing of the reply is left"):
        tokenize_sft(records[0], tok, prompt - 5, truncation="right")


def test_training_counts_the_records_it_cut(tmp_path):
    overrides = [
        "experiment=quickstart",
        "logger=none",
        "data.quickstart.n_train=16",
        "trainer.micro_batch_size=4",
        "trainer.max_steps=1",
        "data.truncation=left",
        "data.max_length=200",
    ]
    cfg = compose_config("train", overrides)
    metrics = train_run(tmp_path, overrides)
    tok = load_tokenizer(cfg.model)
    lengths = [
        len(tokenize_sft(quickstart.to_sft_record(q, cfg.data.prompt), tok, 4096)["input_ids"])
        for q in quickstart.generate("train", 16, seed=cfg.data.quickstart.seed)
    ]
    assert metrics["train/truncated_records"] == sum(n > 200 for n in lengths) > 0


def test_chunked_head_gives_the_full_log_softmax_and_its_gradients(model_cfg, records):
    """The chunked head (chunks cut mid-row, recomputed in backward) equals log-softmax over
    full logits, in value and in every parameter's gradient."""
    tok = load_tokenizer(model_cfg)
    batch = Collator(tok.pad_token_id)([tokenize_sft(r, tok, 2048) for r in records[:3]])
    results = []
    for chunk in (0, 97):
        model = load_model(model_cfg)
        if chunk:
            logps = forward(model, batch, chunk_size=chunk)
        else:
            logps = next_token_logps(model(**batch).logits, batch["input_ids"])
        nll, _ = token_nll_sum(logps, batch["labels"])
        nll.backward()
        results.append((logps.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (full, g_full), (chunked, g_chunked) = results
    assert torch.allclose(full, chunked, atol=1e-5)
    for name, grad in g_full.items():
        scale = float(grad.abs().max())  # float32 sums in another order: relative to the largest
        assert torch.allclose(grad, g_chunked[name], atol=1e-5 * scale, rtol=1e-4), name
