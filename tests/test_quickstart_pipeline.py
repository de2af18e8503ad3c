"""The README's quickstart, end to end: accuracy must rise well above chance after SFT, and the
preference stage trains on the policy's own pairs without losing it."""

from __future__ import annotations

import json
import time

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_quickstart_pipeline_learns_to_reason_to_the_answer(tmp_path):
    started = time.perf_counter()
    result = run_cli("pipeline", "experiment=quickstart", "logger=none", f"hydra.run.dir={tmp_path}", timeout=1800)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    before, after, preferred = metrics["base/mean_accuracy"], metrics["sft/mean_accuracy"], metrics["preference/mean_accuracy"]
    print(f"quickstart pipeline: {elapsed:.0f} s, accuracy {before:.3f} -> SFT {after:.3f} -> CPO-SimPO {preferred:.3f}")
    assert after >= 0.6, f"after SFT accuracy {after:.3f} is not well above chance (0.25)"
    assert after - before >= 0.3
    trained = json.loads((tmp_path / "evaluate_sft" / "metrics.json").read_text())["tasks"]["quickstart"]
    assert trained["extracted"] >= 0.95 and trained["rule/answer_tag"] >= 0.95  # it learned the format
    assert metrics["sample/pairs"] >= 100 and metrics["preference/rewards/accuracies"] > 0.5
    assert preferred >= after - 0.1, "the preference stage should keep what SFT learned"
    assert "after SFT" in result.stdout + result.stderr and "after CPO_SIMPO" in result.stdout + result.stderr
