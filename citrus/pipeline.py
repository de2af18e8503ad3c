"""`citrus pipeline`: the Citrus journey in one run directory, stage after stage.

    prepare -> evaluate_base/ -> [synthesize/] -> sft/ -> evaluate_sft/ -> [sample/ -> preference/
    -> evaluate_preference/] -> a table of accuracy after each stage

pipeline.stages picks and orders the stages (synthesize, sft, sample, preference). Each stage
writes what its own job would (pathways.jsonl, model/, samples.jsonl, pairs.jsonl, ...) and
hands its output to the next: synthesized traces join the SFT data, the SFT export is the policy
that `sample` asks, its pairs train the preference stage, which starts from the SFT export.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from citrus.config import CONF_DIR, AlgorithmConfig
from citrus.data import prepare
from citrus.data.schema import load_records, write_jsonl_atomic
from citrus.evaluate.evaluator import evaluate, results_table
from citrus.synthesis import pathways, sample
from citrus.tracking import console
from citrus.train import trainer

STAGES = ("synthesize", "sft", "sample", "preference")


def check_stages(stages: list[str]) -> None:
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"pipeline.stages: unknown {unknown}; stages are {list(STAGES)}")
    order = [STAGES.index(s) for s in stages]
    if order != sorted(order) or len(set(stages)) != len(stages):
        raise ValueError(f"pipeline.stages={list(stages)}: each stage once, in the order {list(STAGES)}")
    if "preference" in stages and "sample" not in stages:
        raise ValueError("pipeline.stages: preference trains on the pairs of a sample stage; add sample")


def in_dir(run: Any, name: str) -> Any:
    (run.dir / name).mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(run, dir=run.dir / name)


def algorithm(name: str) -> Any:
    """An algorithm config by name (conf/algorithm/<name>.yaml), for the preference stage."""
    path = CONF_DIR / "algorithm" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"pipeline.preference.algorithm={name!r}: no {path}")
    return OmegaConf.merge(OmegaConf.structured(AlgorithmConfig), OmegaConf.load(path))


def with_synthesized(cfg: Any, kept: Path, out: Path) -> Any:
    """cfg whose SFT data is its own plus the synthesized traces."""
    records = load_records(prepare.training_file(cfg.data, cfg.paths.data_dir), "sft")
    extra = load_records(kept, "sft") if kept.stat().st_size else []
    merged = copy.deepcopy(cfg)
    merged.data.path = str(write_jsonl_atomic(out, [*records, *extra]))
    return merged


def run(cfg: Any, run: Any) -> dict[str, Any]:
    stages = list(cfg.pipeline.stages)
    check_stages(stages)
    prepare.run(cfg, run)
    columns, summary = {}, {}
    if cfg.pipeline.evaluate_base:
        base = evaluate(cfg, run.dir / "evaluate_base", run, prefix="base/")
        columns["before"] = base["tasks"]
        summary["base/mean_accuracy"] = base["mean_accuracy"]
    policy = copy.deepcopy(cfg)

    def evaluated(stage_cfg: Any, model_dir: str, name: str, label: str) -> None:
        after = copy.deepcopy(stage_cfg)
        after.model.path = model_dir
        result = evaluate(after, run.dir / f"evaluate_{name}", run, prefix=f"{name}/")
        columns[label] = result["tasks"]
        summary[f"{name}/mean_accuracy"] = result["mean_accuracy"]

    sft_cfg = cfg
    if "synthesize" in stages:
        summary.update(pathways.run(cfg, in_dir(run, "synthesize")))
        sft_cfg = with_synthesized(cfg, run.dir / "synthesize" / "sft.jsonl", run.dir / "synthesize" / "sft_data.jsonl")
    if "sft" in stages:
        trained = trainer.train(sft_cfg, run.dir / "sft", run, prefix="sft/")
        summary.update({k: v for k, v in trained.items() if k != "model_dir"})
        policy.model.path = summary["sft_model_dir"] = trained["model_dir"]
        evaluated(cfg, trained["model_dir"], "sft", "after SFT")
    if "sample" in stages:
        summary.update(sample.run(policy, in_dir(run, "sample")))
    if "preference" in stages:
        pairs = run.dir / "sample" / "pairs.jsonl"
        if not pairs.stat().st_size:
            raise ValueError(f"the sample stage wrote no preference pairs (each question's reason is in {pairs.parent / 'samples.jsonl'}); "
                             "more synthesis.limit or synthesis.sample.num_samples, or a stronger policy, may help")
        pref = copy.deepcopy(policy)
        pref.algorithm = algorithm(cfg.pipeline.preference.algorithm)
        pref.data = OmegaConf.merge(pref.data, {"name": "sampled_pairs", "format": "preference", "quickstart": None,
                                                "path": str(pairs)})
        pref.trainer = OmegaConf.merge(pref.trainer, cfg.pipeline.preference.trainer)
        trained = trainer.train(pref, run.dir / "preference", run, prefix="preference/")
        summary.update({k: v for k, v in trained.items() if k != "model_dir"})
        summary["preference_model_dir"] = trained["model_dir"]
        evaluated(cfg, trained["model_dir"], "preference", f"after {pref.algorithm.name.upper()}")

    console.print(results_table(f"{cfg.name}: {cfg.model.name} on {cfg.benchmark.name}", columns))
    (run.dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    run.tracker.summary({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    return summary
