"""Completion-only labels, the pad == eos trap, the loss and the schedule, on a real tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_config

from citrus.data import quickstart
from citrus.data.schema import DataError
from citrus.models import load_model, load_tokenizer
from citrus.train.data import IGNORE, Collator, tokenize_sft
from citrus.train.losses import token_nll_sum
from citrus.train.schedule import warmup_cosine


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
        DataError, match=rf"record '{records[0]['id']}': \d+ tokens exceed model.max_length=64"
    ):
        tokenize_sft(records[0], tok, 64)


def test_token_nll_sum_matches_transformers_mean_loss(model_cfg, records):
    tok, model = load_tokenizer(model_cfg), load_model(model_cfg)
    batch = Collator(tok.pad_token_id)([tokenize_sft(r, tok, 2048) for r in records[:3]])
    with torch.no_grad():
        out = model(**batch)
        nll, n = token_nll_sum(out.logits, batch["labels"])
    assert n == int((batch["labels"][:, 1:] != IGNORE).sum())
    assert torch.allclose(nll / n, out.loss, atol=1e-5)


def test_accumulated_loss_does_not_depend_on_the_split(model_cfg, records):
    tok, model = load_tokenizer(model_cfg), load_model(model_cfg)
    examples = [tokenize_sft(r, tok, 2048) for r in records[:4]]
    collate = Collator(tok.pad_token_id)
    with torch.no_grad():
        whole = token_nll_sum(model(**collate(examples)).logits, collate(examples)["labels"])
        parts = [
            token_nll_sum(
                model(**collate(examples[i : i + 1])).logits, collate(examples[i : i + 1])["labels"]
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
