"""`citrus pipeline`: the Citrus journey in one run directory, stage after stage.

    prepare -> evaluate_base/ -> [label/ -> synthesize/] -> sft/ -> evaluate_sft/ -> [sample/ ->
    preference/ -> evaluate_preference/] -> a table of accuracy after each stage

pipeline.stages picks and orders the stages (label, synthesize, sft, sample, preference). Each
stage writes what its own job would (labeled.jsonl, pathways.jsonl, model/, samples.jsonl,
pairs.jsonl, ...) and hands its output to the next: labeled questions are what synthesize works
on, synthesized traces join the first SFT data, each SFT stage of pipeline.sft_data starts from
the previous one's export (Citrus S1 -> S2 -> S3), the last export is the policy that `sample`
asks, its pairs train the preference stage, which starts from that export.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from citrus.config import CONF_DIR, AlgorithmConfig, DataConfig
from citrus.data import prepare
from citrus.data.schema import load_records, write_jsonl_atomic
from citrus.evaluate.evaluator import evaluate, results_table
from citrus.synthesis import label, pathways, sample
from citrus.tracking import console
from citrus.train import trainer

STAGES = ("label", "synthesize", "sft", "sample", "preference")


def check_stages(stages: list[str], preference_data: str | None = None) -> None:
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"pipeline.stages: unknown {unknown}; stages are {list(STAGES)}")
    order = [STAGES.index(s) for s in stages]
    if order != sorted(order) or len(set(stages)) != len(stages):
        raise ValueError(
            f"pipeline.stages={list(stages)}: each stage once, in the order {list(STAGES)}"
        )
    if "preference" in stages and "sample" not in stages and preference_data is None:
        raise ValueError(
            "pipeline.stages: preference trains on the pairs of a sample stage; add sample "
            "(or name a preference data config in pipeline.preference.data)"
        )


def in_dir(run: Any, name: str) -> Any:
    (run.dir / name).mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(run, dir=run.dir / name)


def group_option(group: str, name: str, schema: type, key: str) -> Any:
    """A config group option by name (conf/<group>/<name>.yaml), typed by its schema."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"{key}={name!r}: no {path}")
    return OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(path))


def sft_stages(cfg: Any) -> list[tuple[str, Any]]:
    """(stage name, data config) of each SFT stage: `sft` on data=, or sft1, sft2, ... on the
    data configs of pipeline.sft_data, in order."""
    names = list(cfg.pipeline.sft_data)
    if not names:
        return [("sft", cfg.data)]
    return [
        (f"sft{i}", group_option("data", n, DataConfig, "pipeline.sft_data"))
        for i, n in enumerate(names, 1)
    ]


def limited(cfg: Any, source: Path | None = None) -> Any:
    """cfg for the label and synthesize stages: pipeline.synthesis_limit questions, from `source`."""
    out = copy.deepcopy(cfg)
    if cfg.pipeline.synthesis_limit is not None:
        out.synthesis.limit = cfg.pipeline.synthesis_limit
    if source is not None:
        out.synthesis.source = str(source)
    return out


def with_synthesized(cfg: Any, kept: Path, out: Path) -> Any:
    """cfg whose SFT data is its own plus the synthesized traces."""
    records = load_records(prepare.training_file(cfg.data, cfg.paths.data_dir), "sft")
    extra = load_records(kept, "sft") if kept.stat().st_size else []
    merged = copy.deepcopy(cfg)
    merged.data.path = str(write_jsonl_atomic(out, [*records, *extra]))
    return merged


def run(cfg: Any, run: Any) -> dict[str, Any]:
    stages = list(cfg.pipeline.stages)
    check_stages(stages, cfg.pipeline.preference.data)
    prepare.run(cfg, run)
    columns, summary = {}, {}
    if cfg.pipeline.evaluate_base:
        base = evaluate(cfg, run.dir / "evaluate_base", run, prefix="base/")
        columns["before"] = base["tasks"]
        summary["base/mean_accuracy"] = base["mean_accuracy"]
    policy = copy.deepcopy(cfg)

    def evaluated(stage_cfg: Any, model_dir: str, name: str, column: str) -> None:
        after = copy.deepcopy(stage_cfg)
        after.model.path = model_dir
        result = evaluate(after, run.dir / f"evaluate_{name}", run, prefix=f"{name}/")
        columns[column] = result["tasks"]
        summary[f"{name}/mean_accuracy"] = result["mean_accuracy"]

    labeled = None
    if "label" in stages:
        summary.update(label.run(limited(cfg), in_dir(run, "label")))
        labeled = run.dir / "label" / "labeled.jsonl"
    synthesized = None
    if "synthesize" in stages:
        summary.update(pathways.run(limited(cfg, labeled), in_dir(run, "synthesize")))
        synthesized = run.dir / "synthesize" / "sft.jsonl"
    if "sft" in stages:
        for i, (name, data) in enumerate(sft_stages(cfg)):
            stage_cfg = copy.deepcopy(policy)
            stage_cfg.data = data
            if i == 0 and synthesized is not None:
                stage_cfg = with_synthesized(
                    stage_cfg, synthesized, run.dir / "synthesize" / "sft_data.jsonl"
                )
            trained = trainer.train(stage_cfg, run.dir / name, run, prefix=f"{name}/")
            summary.update({k: v for k, v in trained.items() if k != "model_dir"})
            policy.model.path = summary[f"{name}_model_dir"] = trained["model_dir"]
            evaluated(cfg, trained["model_dir"], name, f"after {name.upper()}")
    if "sample" in stages:
        summary.update(sample.run(policy, in_dir(run, "sample")))
    if "preference" in stages:
        pref_data = cfg.pipeline.preference.data
        pairs = run.dir / "sample" / "pairs.jsonl"
        if pref_data is None and not pairs.stat().st_size:
            raise ValueError(
                f"the sample stage wrote no preference pairs (each question's reason is in {pairs.parent / 'samples.jsonl'}); "
                "more synthesis.limit or synthesis.sample.num_samples, or a stronger policy, may help"
            )
        pref = copy.deepcopy(policy)
        pref.algorithm = OmegaConf.merge(
            group_option(
                "algorithm",
                cfg.pipeline.preference.algorithm,
                AlgorithmConfig,
                "pipeline.preference.algorithm",
            ),
            cfg.pipeline.preference.algorithm_params,
        )
        if pref_data is not None:
            pref.data = group_option("data", pref_data, DataConfig, "pipeline.preference.data")
        else:
            pref.data = OmegaConf.merge(
                pref.data,
                {
                    "name": "sampled_pairs",
                    "format": "preference",
                    "quickstart": None,
                    "hub": None,
                    "path": str(pairs),
                },
            )
        pref.trainer = OmegaConf.merge(pref.trainer, cfg.pipeline.preference.trainer)
        trained = trainer.train(pref, run.dir / "preference", run, prefix="preference/")
        summary.update({k: v for k, v in trained.items() if k != "model_dir"})
        summary["preference_model_dir"] = trained["model_dir"]
        evaluated(cfg, trained["model_dir"], "preference", f"after {pref.algorithm.name.upper()}")

    if columns:
        console.print(
            results_table(f"{cfg.name}: {cfg.model.name} on {cfg.benchmark.name}", columns)
        )
    (run.dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    run.tracker.summary({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    return summary
