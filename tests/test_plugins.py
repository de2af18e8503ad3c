"""A user's own components from a module outside citrus (tests/plugins/lab.py) and their own
YAML (tests/plugins/conf/, on Hydra's search path), with no citrus file edited: a preference loss
with a new hyper-parameter, an RL reward with a setting, a benchmark loader of a new format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SMOKE, compose_config

from citrus.data.benchmarks import load_task
from citrus.errors import ConfigError
from citrus.jobs import execute
from citrus.train import rewards

PLUGINS = Path(__file__).parent / "plugins"
SEARCH = f"hydra.searchpath=[file://{PLUGINS / 'conf'}]"


@pytest.fixture(autouse=True)
def lab_module(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))  # where the user's module lives, on their path


def first_loss(tmp_path: Path, *overrides: str) -> float:
    args = [*SMOKE, SEARCH, "data=quickstart_pairs", "trainer.max_steps=1",
            "trainer.log_every=1", "trainer.checkpoint_every=0", *overrides]  # fmt: skip
    execute("train", compose_config("train", args), tmp_path, args)
    rows = (tmp_path / "train_log.jsonl").read_text().splitlines()
    return json.loads(rows[0])["train/loss"]


def test_a_preference_loss_with_its_own_hyper_parameter_trains(tmp_path):
    cfg = compose_config("train", [SEARCH, "algorithm=lab_margin_cpo", "data=quickstart_pairs"])
    assert cfg.algorithm.loss == "lab:margin_cpo" and cfg.algorithm.params.margin == 1.0
    # margin 0 is citrus's own CPO, to the digit; the margin the YAML sets raises the loss
    no_margin = first_loss(tmp_path / "m0", "algorithm=lab_margin_cpo", "algorithm.params.margin=0")
    cpo = first_loss(tmp_path / "cpo", "algorithm=cpo")
    margin = first_loss(tmp_path / "m1", "algorithm=lab_margin_cpo")
    assert no_margin == pytest.approx(cpo, rel=1e-6) and margin > no_margin + 0.1


def test_a_reward_with_its_own_setting_scores_completions():
    cfg = compose_config("train", [SEARCH, "algorithm=grpo", "data=quickstart_rl",
                                   "reward=lab_brevity"])  # fmt: skip
    rewards.check_rewards(cfg.reward)
    question = {"id": "q", "benchmark": "t", "question": "Which?", "answer": "B",
                "options": {"A": "flu", "B": "cold"}}  # fmt: skip
    record = {"messages": [], "question": question}
    short, long = (
        rewards.Completion("<answer>B</answer>", 5, False, record),
        rewards.Completion("<think>" + "x" * 60 + "</think><answer>A</answer>", 30, False, record),
    )
    ctx = rewards.RewardContext(cfg.reward, cfg.algorithm.max_new_tokens)
    scored = rewards.score([short, long], ctx)
    assert scored["lab:brevity"] == [1.0, 0.0] and scored["letter"] == [1.0, 0.0]
    assert scored["reward"] == [1.5, 0.0]


def test_a_benchmark_loader_of_a_new_format_feeds_an_evaluation(tmp_path):
    (tmp_path / "questions.psv").write_text(
        "Fever and flank pain? | pyelonephritis | appendicitis | B\n"
        "Crushing chest pain? | myocardial infarction | gastritis | pericarditis | A\n",
        encoding="utf-8",
    )
    bench = [SEARCH, "benchmark=lab_pipes", f"benchmark.data_root={tmp_path}"]
    cfg = compose_config("evaluate", bench)
    items = load_task("pipes", cfg.benchmark.tasks.pipes, cfg.benchmark, tmp_path).items
    assert [(len(q.options), q.answer) for q in items] == [(2, "B"), (3, "A")]
    smoke = [a for a in SMOKE if not a.startswith("benchmark.")]
    overrides = [*smoke, *bench, "engine.max_new_tokens=8"]
    execute("evaluate", compose_config("evaluate", overrides), tmp_path / "r", overrides)
    scores = json.loads((tmp_path / "r" / "metrics.json").read_text())["tasks"]["pipes"]
    assert scores["n"] == 2 and scores["chance"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    rows = (tmp_path / "r" / "predictions.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["id"] for r in rows) == ["pipes-1", "pipes-2"]


@pytest.mark.parametrize(
    "override,message",
    [
        ("algorithm.loss=lab:nothing_here", r"algorithm.loss='lab:nothing_here': lab has no"),
        ("algorithm.loss=no_such_lab:loss", r"cannot import no_such_lab"),
        ("algorithm.loss=cpo_typo", r"one of \[.*'cpo'.*\], or an import path module:attribute"),
    ],
)
def test_a_component_that_cannot_be_found_names_the_key(override, message):
    cfg = compose_config("train", ["data=quickstart_pairs", override])
    from citrus.train.checks import check_config

    with pytest.raises(ConfigError, match=message):
        check_config(cfg)
