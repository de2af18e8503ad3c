"""What a reviewer sees: every stage's curves in one W&B run (read back from the offline run file),
sweeps grouped, input lineage, report panels bound to logged keys, the CSV and TensorBoard
loggers with the same keys, and the error bars of the report's accuracy plot."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import SMOKE, SMOKE_PIPELINE, run_cli
from wandb_records import offline_run

from citrus.report import error_bars, find_runs, report_panels


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


PIPELINE = [
    *SMOKE_PIPELINE,
    "pipeline.stages=[sft,preference]",
    "pipeline.preference.trainer.max_steps=4",
    "+pipeline.preference.trainer.log_every=2",
]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("wandb-pipeline")
    result = run_cli("pipeline", *PIPELINE, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_every_stage_keeps_its_curve_in_one_wandb_run(pipeline_run):
    """The preference stage logs at steps 2 and 4 after SFT reached step 6: each against its own
    step metric, so W&B keeps both (before, it dropped every row below the last step)."""
    run = offline_run(pipeline_run)
    steps = {
        stage: [row[f"{stage}/step"] for row in run["history"] if f"{stage}/loss" in row]
        for stage in ("sft", "preference")
    }
    assert steps == {"sft": [2, 4, 6], "preference": [2, 4]}
    logged = {  # the training rows (a validation row may share their step)
        row["step"]: row
        for row in lines(pipeline_run / "preference" / "train_log.jsonl")
        if "preference/loss" in row
    }
    for row in run["history"]:
        if "preference/loss" in row:  # the values the trainer logged, at their steps
            assert row["preference/loss"] == pytest.approx(
                logged[row["preference/step"]]["preference/loss"]
            )
    globs = {m.glob_name: m.step_metric for m in run["metrics"] if m.glob_name}
    assert globs == {"sft/*": "sft/step", "preference/*": "preference/step"}
    assert "base/mean_accuracy" in run["summary"] and "preference/mean_accuracy" in run["summary"]


def test_inputs_are_used_and_models_logged(pipeline_run):
    """Data files are the run's inputs (use_artifact's record, so `wandb sync` draws lineage);
    exported models are outputs, by reference."""
    artifacts = {a.name: a for a in offline_run(pipeline_run)["artifacts"]}
    datasets = [a for a in artifacts.values() if a.type == "dataset"]
    models = [a for a in artifacts.values() if a.type == "model"]
    record = json.loads((pipeline_run / "run.json").read_text())
    assert len(datasets) == len(record["inputs"]) and all(a.use_after_commit for a in datasets)
    assert {json.loads(a.metadata)["md5"] for a in datasets} == {
        m["md5"] for m in record["inputs"].values()
    }
    assert sorted(a.name for a in models) == ["quickstart-preference_model", "quickstart-sft_model"]
    assert not any(a.use_after_commit for a in models)


def test_report_panels_are_bound_to_logged_keys(pipeline_run):
    run = offline_run(pipeline_run)
    keys = {k for row in run["history"] for k in row} | set(run["summary"])
    panels = report_panels(find_runs([pipeline_run]))
    bound = {k for p in panels for k in [*p["y"], p.get("x", "preference/step")]}
    assert {"sft/loss", "preference/rewards/margins", "sft/mean_accuracy"} <= bound
    assert bound <= keys, f"panels ask for keys no run logged: {sorted(bound - keys)}"


def test_pipeline_logs_its_accuracy_plot_with_error_bars(pipeline_run):
    assert (pipeline_run / "accuracy.png").is_file() and (pipeline_run / "curves.png").is_file()
    images = {
        k for row in offline_run(pipeline_run)["history"] for k in row if k.startswith("plots/")
    }
    assert {"plots/accuracy", "plots/curves", "plots/margins"} <= images


def test_error_bars_come_from_each_runs_interval(pipeline_run):
    (run,) = find_runs([pipeline_run])
    acc = run.accuracy["sft"]["quickstart"]
    low, high = run.ci95["sft"]["quickstart"]
    assert error_bars([run], "sft", "quickstart") == [
        [pytest.approx(acc - low)],
        [pytest.approx(high - acc)],
    ]
    assert error_bars([run], "missing", "quickstart") == [[0.0], [0.0]]


def test_a_multirun_shares_one_group_named_after_its_sweep(tmp_path):
    args = [a for a in SMOKE if a != "logger=none"] + ["logger=wandb", "trainer.max_steps=2"]
    result = run_cli("train", "-m", *args, "trainer.lr=1e-3,2e-3", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    groups = []
    for job in ("0", "1"):
        record = json.loads((tmp_path / job / "run.json").read_text())
        groups.append((record["wandb"]["group"], offline_run(tmp_path / job)["run"].run_group))
    assert groups[0] == groups[1] and groups[0][0] == groups[0][1]
    assert groups[0][0] != "quickstart" and tmp_path.name in groups[0][0]


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_fabric_loggers_write_the_same_keys(logger, tmp_path):
    args = [a for a in SMOKE if a != "logger=none"]
    result = run_cli("train", *args, f"logger={logger}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {}
    for row in lines(tmp_path / "train_log.jsonl"):
        for key, value in row.items():
            if key != "step":
                expected.setdefault(key, {})[row["step"]] = value
    got: dict[str, dict[int, float]] = {}
    if logger == "csv":
        for row in csv.DictReader((tmp_path / "csv" / "metrics.csv").read_text().splitlines()):
            for key, value in row.items():
                if key != "step" and value != "":
                    got.setdefault(key, {})[int(row["step"])] = float(value)
        assert (tmp_path / "csv" / "hparams.yaml").is_file()
    else:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
        for key in events.Tags()["scalars"]:
            got[key] = {e.step: e.value for e in events.Scalars(key)}
    assert set(expected) <= set(got), sorted(set(expected) - set(got))
    for key, series in expected.items():
        assert {s: pytest.approx(v, rel=1e-6) for s, v in series.items()} == {
            s: got[key][s] for s in series
        }, key
    record = json.loads((tmp_path / "run.json").read_text())
    assert record[logger]["dir"] == str(tmp_path / logger)
    summary = json.loads((tmp_path / logger / "summary.json").read_text())
    assert summary["train/final_loss"] == record["metrics"]["train/final_loss"]
