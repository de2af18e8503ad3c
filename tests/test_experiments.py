"""Experiments, sweeps, launchers, reports and reproduction, run for real on CPU: every preset
under debug=smoke, a 2x2 grid and an Optuna search that produce reports, submitit's local
executor, and `citrus reproduce` giving the same metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from citrus.config import EXPERIMENTS_DIR
from citrus.report import find_runs

# citrus_recipe runs as part of the two backbone presets that include it
PRESETS = sorted(
    p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if p.stem not in ("eval_matrix", "citrus_recipe")
)


def records(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/run.json"))]


# citrus_llama70b in the default suite; the others (a minute each at most) in the long set
LONG = pytest.mark.long


@pytest.mark.parametrize(
    "preset", [p if p == "citrus_llama70b" else pytest.param(p, marks=LONG) for p in PRESETS]
)
def test_every_pipeline_preset_runs_under_debug_smoke(preset, tmp_path):
    result = run_cli("pipeline", f"experiment={preset}", "debug=smoke", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    last = "rl" if (tmp_path / "rl").is_dir() else "preference"  # quickstart_rl: sft -> rl
    stages = ["base", *(["sft1", "sft2"]), last]
    assert all(f"{s}/mean_accuracy" in metrics for s in stages), sorted(metrics)
    # each stage's outputs are in run.json, and the next stage started from them
    outputs = json.loads((tmp_path / "run.json").read_text())["outputs"]
    assert Path(outputs["sft2/model"]).is_dir() and Path(outputs[f"{last}/model"]).is_dir()
    sft2 = yaml.safe_load((tmp_path / "sft2" / "model" / "citrus_config.yaml").read_text())
    assert sft2["model"]["path"] == outputs["sft1/model"]


def test_eval_matrix_runs_every_cell_and_reports_it(tmp_path):
    result = run_cli(
        "evaluate",
        "experiment=eval_matrix",
        "debug=smoke",
        "hydra.sweeper.params.model='tiny_llama,tiny_qwen'",
        "hydra.sweeper.params.benchmark=quickstart",
        f"hydra.sweep.dir={tmp_path}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    done = records(tmp_path)
    assert sorted(r["status"] for r in done) == ["completed", "completed"]
    assert sorted(o for r in done for o in r["overrides"] if o.startswith("model=")) == [
        "model=tiny_llama",
        "model=tiny_qwen",
    ]
    report = (tmp_path / "report" / "report.md").read_text()
    assert (
        "model=tiny_llama" in report
        and "model=tiny_qwen" in report
        and (tmp_path / "report" / "accuracy.png").is_file()
    )


@pytest.mark.long  # eight pipeline jobs: ~4 min
def test_cpo_grid_sweep_survives_failing_jobs_and_reports_them_all(tmp_path):
    # the 2x2 lr x beta grid, twice: with trainer.max_steps=0 the SFT stage refuses to start,
    # so four of the eight jobs fail and the sweep goes on
    result = run_cli(
        "pipeline",
        "experiment=quickstart",
        "debug=smoke",
        "sweep=cpo_grid",
        "pipeline.stages=[sft,preference]",
        "pipeline.sft_data=[]",
        "trainer.max_steps=4,0",
        f"hydra.sweep.dir={tmp_path}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    done = records(tmp_path)
    assert len(done) == 8 and all(r["sweep"]["dir"] == str(tmp_path) for r in done)
    failed = [r for r in done if r["status"] == "failed"]
    assert len(failed) == 4 and all("trainer.max_steps=0" in r["overrides"] for r in failed)
    assert all("set trainer.max_steps >= 1" in r["error"] for r in failed)
    runs = find_runs([tmp_path])
    grid = {
        f"pipeline.preference.trainer.lr={lr} pipeline.preference.algorithm_params.beta={b}"
        for lr in ("1e-06", "3e-06")
        for b in ("2.0", "10.0")
    }
    assert {r.label.split(" trainer.")[0] for r in runs} == grid, [r.label for r in runs]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "8 runs: 4 completed, 4 failed." in report
    assert report.count("| failed: ConfigError: set trainer.max_steps >= 1") == 4
    for plot in ("accuracy.png", "curves.png", "margins.png"):
        assert (tmp_path / "report" / plot).stat().st_size > 1000, plot
    # preference margins come from the completed jobs' own training logs
    assert all(r.margins.get("preference") for r in runs if r.status == "completed")
    # the same report as a job of its own, over any run directories
    job = run_cli(
        "report",
        f"report.runs=[{tmp_path}]",
        "report.title=grid",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'review'}",
    )
    assert job.returncode == 0, job.stderr[-3000:]
    assert (tmp_path / "review" / "report.md").read_text().splitlines()[
        2
    ] == "8 runs: 4 completed, 4 failed."
    assert "<h1>grid</h1>" in (tmp_path / "review" / "report.html").read_text()


@pytest.mark.long  # ~2 min
def test_optuna_search_returns_the_metric_and_reports(tmp_path):
    result = run_cli(
        "pipeline",
        "experiment=quickstart",
        "debug=smoke",
        "sweep=cpo_optuna",
        "hydra.sweeper.n_trials=2",
        "pipeline.stages=[sft,preference]",
        "pipeline.sft_data=[]",
        "pipeline.evaluate_base=false",
        f"hydra.sweep.dir={tmp_path}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    done = records(tmp_path)
    assert len(done) == 2 and all(r["status"] == "completed" for r in done)
    found = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    best = found["best_value"]
    assert best == max(r["metrics"]["preference/mean_accuracy"] for r in done)
    trial_params = [{o.split("=")[0].lstrip("+") for o in r["overrides"] if "=" in o} for r in done]
    assert all(
        {
            "pipeline.preference.trainer.lr",
            "pipeline.preference.algorithm_params.beta",
            "pipeline.preference.algorithm_params.simpo_gamma",
        }
        <= p
        for p in trial_params
    )
    assert (tmp_path / "report" / "report.html").is_file()


def test_objective_is_nan_for_a_failed_job_and_names_a_missing_metric():
    from citrus.jobs import objective
    from citrus.result import JobResult

    result = JobResult({"sft/mean_accuracy": 0.5})
    assert math.isnan(objective(None, "preference/mean_accuracy"))
    assert objective(result, "sft/mean_accuracy") == 0.5
    with pytest.raises(
        KeyError,
        match=r"'sft/mean_acc' is not a metric of this job; it has \['sft/mean_accuracy'\]",
    ):
        objective(result, "sft/mean_acc")


def test_submitit_local_launcher_runs_each_job_as_its_own_process(tmp_path):
    result = run_cli(
        "prepare",
        "-m",
        "hydra/launcher=submitit_local",
        "logger=none",
        "data.quickstart.n_train=16",
        "benchmark.tasks.quickstart.limit=4",
        "seed=1,2",
        f"hydra.sweep.dir={tmp_path}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    done = records(tmp_path)
    assert sorted(r["status"] for r in done) == ["completed", "completed"]
    assert (
        len(list((tmp_path / ".submitit").glob("*/*_result.pkl"))) == 2
    )  # submitit ran and pickled both


def test_reproduce_gives_the_same_metrics_and_notices_a_change(tmp_path):
    first = tmp_path / "run"
    args = [
        "experiment=quickstart",
        "debug=smoke",
        "pipeline.stages=[sft]",
        "pipeline.sft_data=[]",
        "trainer.max_steps=6",
    ]
    result = run_cli("pipeline", *args, f"hydra.run.dir={first}")
    assert result.returncode == 0, result.stderr[-3000:]
    again = run_cli("reproduce", str(first))
    assert again.returncode == 0, again.stderr[-3000:]
    before, after = (
        json.loads((d / "run.json").read_text()) for d in (first, tmp_path / "run-reproduced")
    )
    assert "metrics identical" in again.stdout and after["overrides"][: len(args)] == args
    numeric = {
        k
        for k, v in before["metrics"].items()
        if isinstance(v, float) and "seconds" not in k and "per_s" not in k
    }
    assert "sft/final_loss" in numeric and all(
        before["metrics"][k] == after["metrics"][k] for k in numeric
    )
    changed = run_cli("reproduce", str(first), "seed=7", "data.quickstart.seed=7")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "sft/final_loss:" in changed.stdout  # listed among the metrics that differ
    assert (tmp_path / "run-reproduced-2" / "run.json").is_file()


def test_reproduce_refuses_what_it_cannot_rerun(tmp_path):
    assert "no run.json" in run_cli("reproduce", str(tmp_path)).stderr
    (tmp_path / "run.json").write_text(
        json.dumps(
            {"job": "evaluate", "overrides": ["engine.api_key=<redacted>"], "git": {"commit": None}}
        )
    )
    result = run_cli("reproduce", str(tmp_path))
    assert result.returncode == 2 and "engine.api_key=<redacted> held a secret" in result.stderr
