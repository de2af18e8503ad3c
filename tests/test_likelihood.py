"""Likelihood scoring: log p(choice | context) from batched, left-padded passes must equal an
unbatched reference computed by hand from the model's logits."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SMOKE, compose_config

from citrus.data import quickstart
from citrus.engines.hf import HFEngine
from citrus.jobs import execute
from citrus.prompts import build_text


@pytest.fixture(scope="module")
def engine():
    cfg = compose_config("evaluate", ["model=tiny_qwen", "engine.batch_size=3"])
    return HFEngine(cfg.engine, cfg.model)


def reference(engine: HFEngine, context: str, choice: str) -> float:
    tok = engine.tokenizer
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    ctx = bos + tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(engine.model(input_ids=ids).logits[0].float(), -1)
    return sum(float(logprobs[len(ctx) - 1 + k, t]) for k, t in enumerate(cont))


def test_single_and_multi_token_choices_match_an_unbatched_reference(engine):
    items = quickstart.generate("test", 5, seed=2)
    contexts = [build_text(q, "mc_likelihood") for q in items]
    letters = [[f" {k}" for k in q.options] for q in items]
    texts = [[f" {v}" for v in q.options.values()] for q in items]  # several tokens each
    seen = []
    for choices in (letters, texts):
        got = engine.loglikelihoods(contexts, choices, on_batch=lambda idx, s: seen.extend(idx))
        for ctx, opts, scores in zip(contexts, choices, got):
            assert scores == pytest.approx([reference(engine, ctx, c) for c in opts], abs=1e-4)
    assert sorted(seen) == sorted(list(range(5)) * 2)  # every question reported once per call


def test_likelihood_mode_end_to_end(tmp_path):
    overrides = [*SMOKE, "benchmark.mode=likelihood", "benchmark.prompt=mc_likelihood"]
    execute("evaluate", compose_config("evaluate", overrides), tmp_path, overrides)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["rule"] == "likelihood" for r in rows)
    assert all(r["pred"] == max(r["logprobs"], key=r["logprobs"].get) for r in rows)
    assert rows[0]["prompt"].startswith("Question: A ") and rows[0]["prompt"].endswith(
        "\nAnswer:"
    )  # lm-eval's MedQA layout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["mode"] == "likelihood" and metrics["tasks"]["quickstart"]["invalid_rate"] == 0.0


def test_unknown_mode_is_refused(tmp_path):
    overrides = [*SMOKE, "benchmark.mode=vibes"]
    with pytest.raises(ValueError, match="benchmark.mode: unknown 'vibes'"):
        execute("evaluate", compose_config("evaluate", overrides), tmp_path, overrides)


def test_an_engine_that_cannot_score_is_refused_by_name(tmp_path):
    overrides = [
        *SMOKE,
        "benchmark.mode=likelihood",
        "engine=openai",
        "engine.base_url=http://127.0.0.1:9/v1",  # never reached: refused before any request
    ]
    with pytest.raises(ValueError, match=r"engine=hf or engine=vllm \(engine=openai only gen"):
        execute("evaluate", compose_config("evaluate", overrides), tmp_path, overrides)
