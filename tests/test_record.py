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


def evaluated(run_dir, accuracy: float, low: float, high: float, compute: dict) -> None:
    """A run directory as `citrus evaluate` leaves it: run.json and metrics.json."""
    import json

    run_dir.mkdir(parents=True)
    task = {"accuracy": accuracy, "ci95_low": low, "ci95_high": high, "n": 200}
    (run_dir / "metrics.json").write_text(json.dumps({"tasks": {"medqa": task}}))
    record = {"job": "evaluate", "status": "completed", "metrics": {}, "compute": compute}
    (run_dir / "run.json").write_text(json.dumps(record))


def test_reproduce_says_which_accuracies_left_the_interval_and_what_compute_changed(tmp_path):
    from citrus.reproduce import compare_accuracy, compare_compute

    avx512 = {"cpu_capability": "AVX512", "torch_threads": 2}
    evaluated(tmp_path / "a", 0.685, 0.62, 0.75, avx512)
    evaluated(tmp_path / "inside", 0.72, 0.655, 0.78, {**avx512, "cpu_capability": "AVX2"})
    evaluated(tmp_path / "outside", 0.80, 0.745, 0.855, avx512)
    evaluated(tmp_path / "same", 0.685, 0.62, 0.75, avx512)
    inside = "\n".join(compare_accuracy(tmp_path / "a", tmp_path / "inside"))
    assert (
        "evaluate/medqa accuracy 68.5% -> 72.0%: inside the original's 95% CI [62.0, 75.0]"
        in inside
    )
    outside = "\n".join(compare_accuracy(tmp_path / "a", tmp_path / "outside"))
    assert "68.5% -> 80.0%: OUTSIDE the original's 95% CI [62.0, 75.0]" in outside
    assert "identical" in "\n".join(compare_accuracy(tmp_path / "a", tmp_path / "same"))
    changed = compare_compute(avx512, {**avx512, "cpu_capability": "AVX2"})
    assert changed[1:] == ["  cpu_capability: AVX512 -> AVX2"]
    assert compare_compute(avx512, dict(avx512)) == []


def test_run_json_records_what_float_results_depend_on(monkeypatch):
    import torch

    from citrus.record import compute_environment

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    env = compute_environment()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch_threads"] == torch.get_num_threads() and env["env"]["OMP_NUM_THREADS"] == "2"
    assert env["cpu"] and "gpus" not in env  # no GPU here
