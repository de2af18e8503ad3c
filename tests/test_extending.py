"""The two worked examples of docs/extending.md, each end to end: a
preference loss added as one function + one registry line + one YAML (APO-zero), and an engine
added as one module + one YAML (replay)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import SMOKE, compose_config

from citrus.engines import Engine, build_engine
from citrus.errors import EngineError
from citrus.jobs import execute
from citrus.train import losses
from citrus.train.objectives import OBJECTIVES


def test_the_apo_zero_yaml_selects_its_registry_entry_and_function():
    cfg = compose_config("train", ["algorithm=apo_zero", "data=quickstart_pairs"])
    objective = OBJECTIVES[cfg.algorithm.loss]
    assert objective.loss.fn is losses.apo_zero and objective.needs_reference(None)
    assert objective.data_format == "preference"


def test_apo_zero_trains_a_policy_against_its_frozen_reference(tmp_path):
    overrides = [*SMOKE, "algorithm=apo_zero", "data=quickstart_pairs", "trainer.lr=1e-3",
                 "trainer.checkpoint_every=0", "trainer.log_every=1",
                 "trainer.max_steps=4"]  # fmt: skip
    metrics = execute("train", compose_config("train", overrides), tmp_path, overrides).metrics
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    # at step 1 the policy is its reference: every log-ratio, so every reward, is 0, loss = 1
    assert log[0]["train/rewards/margins"] == 0.0 and log[0]["train/loss"] == pytest.approx(1.0)
    assert metrics["train/final_loss"] < log[0]["train/loss"]
    assert (tmp_path / "model" / "config.json").is_file()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A real evaluation with the hf engine: the predictions the replay engine replays."""
    run_dir = tmp_path_factory.mktemp("hf")
    overrides = [*SMOKE, "benchmark.tasks.quickstart.limit=8"]
    execute("evaluate", compose_config("evaluate", overrides), run_dir, overrides)
    return run_dir, overrides


def test_replay_rescores_a_recorded_evaluation_identically(recorded, tmp_path):
    run_dir, overrides = recorded
    replay = [*overrides, "engine=replay", f"engine.path={run_dir}"]
    execute("evaluate", compose_config("evaluate", replay), tmp_path, replay)

    def rows(d):
        return [json.loads(line) for line in (d / "predictions.jsonl").read_text().splitlines()]

    before, after = (
        sorted(rows(run_dir), key=lambda r: r["id"]),
        sorted(rows(tmp_path), key=lambda r: r["id"]),
    )
    assert [(r["id"], r["response"], r["pred"]) for r in after] == [
        (r["id"], r["response"], r["pred"]) for r in before
    ]
    scores = lambda d: json.loads((d / "metrics.json").read_text())["tasks"]["quickstart"]  # noqa: E731
    assert scores(tmp_path)["accuracy"] == scores(run_dir)["accuracy"]
    assert json.loads((tmp_path / "metrics.json").read_text())["sampling"]["name"] == "replay"


def test_replay_keeps_the_engine_contract_and_fails_as_an_engine_does(recorded):
    run_dir, overrides = recorded
    cfg = compose_config("evaluate", [*overrides, "engine=replay", f"engine.path={run_dir}"])
    engine = build_engine(cfg.engine, cfg.model)
    assert isinstance(engine, Engine) and not math.isnan(engine.cfg.temperature)
    with pytest.raises(EngineError, match="has no reply to the prompt 'never asked'"):
        engine.generate([[{"role": "user", "content": "never asked"}]])
