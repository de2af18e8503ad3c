"""`citrus pipeline`: the whole quickstart journey in one run directory.

    prepare -> evaluate_base/ (untrained) -> train/ (SFT) -> evaluate_trained/ -> before/after table

Each stage writes the same files its own job would (predictions.jsonl, metrics.json, model/).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from citrus.data import prepare
from citrus.evaluate.evaluator import evaluate, results_table
from citrus.tracking import console
from citrus.train import trainer


def run(cfg: Any, run: Any) -> dict[str, Any]:
    prepare.run(cfg, run)
    columns, summary = {}, {}
    if cfg.pipeline.evaluate_base:
        base = evaluate(cfg, run.dir / "evaluate_base", run, prefix="base/")
        columns["before"] = base["tasks"]
        summary["base/mean_accuracy"] = base["mean_accuracy"]

    trained = trainer.train(cfg, run.dir / "train", run)
    summary.update({k: v for k, v in trained.items() if k != "model_dir"})

    after_cfg = copy.deepcopy(cfg)
    after_cfg.model.path = trained["model_dir"]
    after = evaluate(after_cfg, run.dir / "evaluate_trained", run, prefix="trained/")
    columns[f"after {cfg.algorithm.name.upper()}"] = after["tasks"]
    summary["trained/mean_accuracy"] = after["mean_accuracy"]

    console.print(results_table(f"{cfg.name}: {cfg.model.name} on {cfg.benchmark.name}", columns))
    (run.dir / "metrics.json").write_text(json.dumps({**summary, "model_dir": trained["model_dir"]}, indent=2))
    run.tracker.summary(summary)
    return summary
