"""Run-record helpers: redaction of secrets, seeds, reproduce commands."""

from __future__ import annotations

import pytest

from citrus.record import REDACTED, collect_seeds, redact, redact_override, reproduce_command


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "engine.api_key",
        "hf_token",
        "client_secret",
        "password",
        "openai.API_KEY",
        "aws_access_key",
    ],
)
def test_secret_keys_are_redacted(key):
    assert redact_override(f"{key}=hunter2") == f"{key}={REDACTED}"
    assert redact({key: "hunter2"}) == {key: REDACTED}


@pytest.mark.parametrize(
    "key",
    ["engine.max_new_tokens", "api_key_env", "tokenizer_corpus_items", "engine.seed", "model.path"],
)
def test_ordinary_keys_are_kept(key):
    assert redact_override(f"{key}=7") == f"{key}=7"
    assert redact({key: 7}) == {key: 7}


def test_redaction_is_recursive():
    cfg = {"engine": {"api_key": "sk-1", "items": [{"token": "t"}]}, "seed": 1}
    assert redact(cfg) == {
        "engine": {"api_key": REDACTED, "items": [{"token": REDACTED}]},
        "seed": 1,
    }


def test_reproduce_command_quotes_what_the_shell_needs():
    cmd = reproduce_command("train", ["name=my run", "trainer.lr=1e-3", "+engine.api_key=sk-x"])
    assert cmd == f"citrus train 'name=my run' trainer.lr=1e-3 '+engine.api_key={REDACTED}'"


def test_collect_seeds_finds_every_seed():
    cfg = {
        "seed": 1,
        "engine": {"seed": 2},
        "model": {"build": {"init_seed": 3}},
        "trainer": {"lr": 0.1},
    }
    assert collect_seeds(cfg) == {"seed": 1, "engine.seed": 2, "model.build.init_seed": 3}
