"""Tiny backbones: built once from config, then loaded through the Auto classes like hub models."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import compose_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from citrus.models import load_model, load_tokenizer, resolve_path
from citrus.models.tiny import BUILD_STAMP

MODELS = {"tiny_llama": "LlamaForCausalLM", "tiny_qwen": "Qwen2ForCausalLM"}


@pytest.fixture(scope="module", params=sorted(MODELS))
def built(request):
    cfg = compose_config("train", [f"model={request.param}"]).model
    return request.param, cfg, resolve_path(cfg)


def test_loads_through_auto_classes_as_the_real_architecture(built):
    name, cfg, path = built
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == MODELS[name]
    assert (
        model.config.hidden_size // model.config.num_attention_heads == 64
    )  # vLLM CPU kernels need >= 64
    assert model.config.vocab_size == len(tok)
    assert 500 < len(tok) <= cfg.build.vocab_size
    n_params = sum(p.numel() for p in model.parameters())
    assert 1e6 < n_params < 2e7, n_params


def test_tokenizer_has_distinct_pad_and_end_of_turn_and_a_chat_template(built):
    name, cfg, _ = built
    tok = load_tokenizer(cfg)
    assert tok.pad_token_id != tok.eos_token_id
    expected_eos = {"tiny_llama": "<|eot_id|>", "tiny_qwen": "<|im_end|>"}[name]
    assert tok.eos_token == expected_eos
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "A."},
    ]
    full = tok.apply_chat_template(messages, tokenize=False)
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert full.startswith(prompt) and full[len(prompt) :].startswith("A.")
    assert expected_eos in full[len(prompt) :]
    ids = tok(full, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == full  # byte-level BPE is lossless
    assert (
        tok.decode(tok("Ünïcode → 42 µg", add_special_tokens=False)["input_ids"])
        == "Ünïcode → 42 µg"
    )


def test_forward_and_generate(built):
    _, cfg, _ = built
    model, tok = load_model(cfg), load_tokenizer(cfg, padding_side="left")
    enc = tok(["hello", "a longer prompt here"], return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (2, enc["input_ids"].shape[1] + 4)
    assert torch.isfinite(model(**enc).logits).all()


def test_build_is_cached_and_deterministic(built):
    _, cfg, path = built
    stamp = os.path.getmtime(os.path.join(path, "config.json"))
    assert resolve_path(cfg) == path
    assert os.path.getmtime(os.path.join(path, "config.json")) == stamp


def test_build_is_reproducible_from_config(built, tmp_path):
    _, cfg, path = built
    cfg = cfg.copy()
    cfg.path = str(tmp_path / "again")
    again = resolve_path(cfg)
    a = AutoModelForCausalLM.from_pretrained(path).state_dict()
    b = AutoModelForCausalLM.from_pretrained(again).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (
        AutoTokenizer.from_pretrained(path).get_vocab()
        == AutoTokenizer.from_pretrained(again).get_vocab()
    )


def test_stale_build_is_refused(built, tmp_path):
    _, cfg, path = built
    cfg = cfg.copy()
    cfg.path = str(tmp_path / "stale")
    resolve_path(cfg)
    stamp = json.loads((tmp_path / "stale" / BUILD_STAMP).read_text())
    cfg.build.num_hidden_layers = stamp["num_hidden_layers"] + 1
    with pytest.raises(FileExistsError, match="built from other settings"):
        resolve_path(cfg)


def test_tokenizer_without_chat_template_is_a_clear_error(built, tmp_path):
    _, cfg, path = built
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = None
    tok.save_pretrained(tmp_path / "plain")
    AutoModelForCausalLM.from_pretrained(path).config.save_pretrained(tmp_path / "plain")
    cfg = cfg.copy()
    cfg.path, cfg.build = str(tmp_path / "plain"), None
    with pytest.raises(ValueError, match="no chat template; set model.chat_template"):
        load_tokenizer(cfg)
