"""The quickstart_rl preset end to end (SFT -> GRPO on the policy's own samples -> evaluate): a
preset-scale run, by hand (`pytest -m long tests/test_quickstart_rl.py`), not in CI.
The rollouts' reward must rise over the RL stage and test accuracy must not fall below the SFT
model's 95% interval (docs/results.md, "Online RL on the quickstart")."""

from __future__ import annotations

import json
import time

import pytest
from conftest import run_cli

MINUTES = 20  # a generous bound for the whole preset on 2 cores (a hang, not a timing)


@pytest.mark.long
def test_quickstart_rl_rewards_rise_and_accuracy_holds(tmp_path):
    started = time.perf_counter()
    result = run_cli(
        "pipeline", "experiment=quickstart_rl", "logger=none", f"hydra.run.dir={tmp_path}",
        timeout=2 * MINUTES * 60,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    sft = json.loads((tmp_path / "evaluate_sft" / "metrics.json").read_text())["tasks"]
    rl = json.loads((tmp_path / "evaluate_rl" / "metrics.json").read_text())["tasks"]
    before, after = sft["quickstart"], rl["quickstart"]
    rows = [json.loads(x) for x in (tmp_path / "rl" / "train_log.jsonl").read_text().splitlines()]
    rewards = [r["rl/reward"] for r in rows]
    third = len(rewards) // 3
    print(
        f"quickstart_rl: {elapsed:.0f} s; SFT {before['accuracy']:.3f} "
        f"[{before['ci95_low']:.3f}, {before['ci95_high']:.3f}] -> GRPO {after['accuracy']:.3f}; "
        f"reward {sum(rewards[:third]) / third:.3f} (first third) -> "
        f"{sum(rewards[-third:]) / third:.3f} (last third); {metrics['rl/seconds']:.0f} s of RL"
    )
    assert after["accuracy"] >= before["ci95_low"], (after["accuracy"], before)
    assert sum(rewards[-third:]) > sum(rewards[:third])
