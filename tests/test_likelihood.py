"""Likelihood scoring: log p(choice | context) from batched, left-padded passes must equal an
unbatched reference computed by hand from the model's logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SMOKE, compose_config

from citrus.data import quickstart
from citrus.engines.hf import HFEngine
from citrus.evaluate.evaluator import continuations_of
from citrus.jobs import execute
from citrus.models import load_model, resolve_path
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


def bos_adding_copy(directory: Path) -> Path:
    """The tiny Llama (whose tokenizer adds no BOS) saved to `directory` with a tokenizer that
    prepends <|begin_of_text|> as Llama-3's does: a TemplateProcessing post-processor."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    cfg = compose_config("evaluate", ["model=tiny_llama"]).model
    tok = AutoTokenizer.from_pretrained(resolve_path(cfg))
    assert tok("x").input_ids[0] != tok.bos_token_id  # the built tokenizer adds none
    bos = tok.bos_token
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.bos_token_id)]
    )
    tok.save_pretrained(directory)
    load_model(cfg).save_pretrained(directory)
    return directory


def test_option_text_scores_with_a_bos_adding_tokenizer_agree_with_lm_evaluation_harness(
    tmp_path,
):
    """Multi-token continuations (option texts, as `continuation: text` scores them) and
    letters, after contexts of different lengths, from a tokenizer that adds BOS: citrus's
    scores stay within 1e-4 nats of lm-eval's HF backend (its default: the tokenizer's rule)."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    directory = bos_adding_copy(tmp_path / "tiny_llama_bos")
    items = quickstart.generate("test", 4, seed=3)
    contexts = [build_text(q, "mc_likelihood") for q in items]
    contexts.append(f"Question: {items[0].question}\nAnswer:")  # the stem alone: much shorter
    items.append(items[0])
    texts = [continuations_of(q, "text") for q in items]  # " Graves disease": several tokens
    letters = [continuations_of(q, "letter") for q in items]  # " A": one forward per context
    contexts, choices = contexts * 2, texts + letters

    lm = HFLM(pretrained=str(directory), dtype="float32", batch_size=4, device="cpu")
    assert lm.tok_encode(contexts[0])[0] == lm.tokenizer.bos_token_id  # lm-eval scores a BOS
    requests = [
        Instance("loglikelihood", {}, (context, choice), i)
        for i, (context, options) in enumerate(zip(contexts, choices))
        for choice in options
    ]
    theirs = [ll for ll, _ in lm.loglikelihood(requests)]

    def citrus_scores(add_bos_token: str) -> tuple[HFEngine, list[float]]:
        cfg = compose_config(
            "evaluate",
            [
                "model=tiny_llama",
                f"model.path={directory}",
                "model.build=null",  # a copy of the build, not built here
                "engine.batch_size=4",
                f"engine.add_bos_token={add_bos_token}",
            ],
        )
        engine = HFEngine(cfg.engine, cfg.model)
        return engine, [s for row in engine.loglikelihoods(contexts, choices) for s in row]

    engine, ours = citrus_scores("null")  # the tokenizer's own rule: BOS
    tok = engine.tokenizer
    assert all(engine.encode(c)[0] == tok.bos_token_id for c in contexts)
    assert len({len(engine.encode(c)) for c in contexts}) > 2  # batches are left-padded
    assert any(len(tok(t, add_special_tokens=False).input_ids) > 2 for row in texts for t in row)
    diff = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    assert diff < 1e-4, f"add_bos_token=null: max |citrus - lm-eval| = {diff:.2e} nats"

    _, forced = citrus_scores("true")  # BOS already there: not added twice
    diff = max(abs(a - b) for a, b in zip(forced, theirs, strict=True))
    assert diff < 1e-4, f"add_bos_token=true: max |citrus - lm-eval| = {diff:.2e} nats"

    _, dropped = citrus_scores("false")  # without BOS the scores move: the check above has teeth
    assert max(abs(a - b) for a, b in zip(dropped, theirs, strict=True)) > 1e-2
