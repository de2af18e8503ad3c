"""`citrus pipeline`: the Citrus journey in one run directory, stage after stage.

    prepare -> evaluate_base/ -> [label/ -> synthesize/] -> sft/ -> evaluate_sft/ -> [sample/ ->
    preference/ -> evaluate_preference/] -> [rl/ -> evaluate_rl/] -> a table of accuracy after
    each stage

pipeline.stages picks and orders the stages (label, synthesize, sft, sample, preference, rl). Each
stage writes what its own job would (labeled.jsonl, pathways.jsonl, model/, samples.jsonl,
pairs.jsonl, ...) and hands its output to the next: labeled questions are what synthesize works on,
synthesized traces join the SFT data of stage `pipeline.synthesized_stage` (the last by default),
each SFT stage of pipeline.sft_data starts from the previous one's export (Citrus S1 -> S2 -> S3),
the last export is the policy that `sample` asks, its pairs train the preference stage, which starts
from that export; the rl stage (GRPO on pipeline.rl's prompts, sampling from the policy as it
trains) starts from the last export before it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from citrus import report
from citrus.config import CONF_DIR, AlgorithmConfig, DataConfig, RewardConfig
from citrus.data import prepare
from citrus.data.schema import append_jsonl, load_records, whole_records, write_jsonl_atomic
from citrus.errors import ConfigError, DataError
from citrus.evaluate.evaluator import evaluate, results_table
from citrus.result import JobResult
from citrus.synthesis import label, pathways, sample
from citrus.tracking import console
from citrus.train import trainer

STAGES = ("label", "synthesize", "sft", "sample", "preference", "rl")


def check_stages(stages: list[str], preference_data: str | None = None) -> None:
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"pipeline.stages: unknown {unknown}; stages are {list(STAGES)}")
    order = [STAGES.index(s) for s in stages]
    if order != sorted(order) or len(set(stages)) != len(stages):
        raise ConfigError(
            f"pipeline.stages={list(stages)}: each stage once, in the order {list(STAGES)}"
        )
    if "preference" in stages and "sample" not in stages and preference_data is None:
        raise ConfigError(
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
        raise ConfigError(f"{key}={name!r}: no {path}")
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


def synthesized_into(cfg: Any, n_stages: int) -> int:
    """The SFT stage (0-based) that also trains on the synthesized traces."""
    i = cfg.pipeline.synthesized_stage
    if not -n_stages <= i < n_stages:
        raise ConfigError(
            f"pipeline.synthesized_stage={i}: the pipeline has {n_stages} SFT stage(s)"
        )
    return i % n_stages


def limited(cfg: Any, source: Path | None = None) -> Any:
    """cfg for the label and synthesize stages: pipeline.synthesis_limit questions from
    `source`."""
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
    # a plain file now: not converted again from the hub's layout, not mixed again
    merged.data.path = str(write_jsonl_atomic(out, [*records, *extra]))
    merged.data.hub, merged.data.mixture, merged.data.quickstart = None, [], None
    return merged


def preference_config(cfg: Any, policy: Any, pairs: Path | None) -> Any:
    """The preference stage's config: pipeline.preference's algorithm (with its params) and
    trainer overrides, on the sample stage's pairs or a named preference data config."""
    stage = cfg.pipeline.preference
    pref = copy.deepcopy(policy)
    algorithm = group_option(
        "algorithm", stage.algorithm, AlgorithmConfig, "pipeline.preference.algorithm"
    )
    pref.algorithm = OmegaConf.merge(algorithm, stage.algorithm_params)
    if stage.data is not None:
        pref.data = group_option("data", stage.data, DataConfig, "pipeline.preference.data")
    else:
        if not pairs.stat().st_size:
            raise DataError(
                f"the sample stage wrote no preference pairs (each question's reason is in "
                f"{pairs.parent / 'samples.jsonl'}); more synthesis.limit or "
                "synthesis.sample.num_samples, or a stronger policy, may help"
            )
        sampled = {
            "name": "sampled_pairs",
            "format": "preference",
            "path": str(pairs),
            "quickstart": None,
            "hub": None,
            "truncation": "error",
            "max_length": None,
            "max_prompt_length": None,
        }  # fmt: skip  (not the SFT data's limits)
        pref.data = OmegaConf.merge(pref.data, sampled)
    pref.data = OmegaConf.merge(pref.data, stage.data_params)
    pref.trainer = OmegaConf.merge(pref.trainer, stage.trainer)
    return pref


def rl_config(cfg: Any, policy: Any) -> Any:
    """The rl stage's config: pipeline.rl's algorithm (with its params), prompt data, reward and
    trainer overrides, from the current policy."""
    stage = cfg.pipeline.rl
    rl = copy.deepcopy(policy)
    algorithm = group_option("algorithm", stage.algorithm, AlgorithmConfig, "pipeline.rl.algorithm")
    rl.algorithm = OmegaConf.merge(algorithm, stage.algorithm_params)
    data = group_option("data", stage.data, DataConfig, "pipeline.rl.data")
    rl.data = OmegaConf.merge(data, stage.data_params)
    if stage.reward is not None:
        rl.reward = group_option("reward", stage.reward, RewardConfig, "pipeline.rl.reward")
    rl.trainer = OmegaConf.merge(rl.trainer, stage.trainer)
    return rl


def stage_names(cfg: Any) -> list[str]:
    """Every stage the pipeline runs, in order, as the stage log and pipeline.until name them."""
    stages = list(cfg.pipeline.stages)
    names = ["prepare", *(["evaluate_base"] if cfg.pipeline.evaluate_base else [])]
    names += [s for s in ("label", "synthesize") if s in stages]
    if "sft" in stages:
        names += [n for name, _ in sft_stages(cfg) for n in (name, f"evaluate_{name}")]
    names += ["sample"] if "sample" in stages else []
    names += ["preference", "evaluate_preference"] if "preference" in stages else []
    names += ["rl", "evaluate_rl"] if "rl" in stages else []
    return names


class UntilReached(Exception):
    """pipeline.until's stage is done: this process stops there (a submitted job's share)."""


def config_digest(cfg: Any) -> str:
    """What a pipeline's finished stages were computed from: its resolved config, less where its
    files and logs go and how its processes run (paths, logger, cluster, pipeline.submit and
    until, trainer.resume, the other jobs' nodes)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    for key in ("cluster", "paths", "logger", "hub", "serve", "chat", "report", "optimized_metric"):
        config.pop(key, None)
    for key in ("submit", "until"):
        config["pipeline"].pop(key, None)
    config["trainer"].pop("resume", None)
    return hashlib.md5(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


class StageLog:
    """stages.jsonl: one line per finished stage (its metrics and output files), appended when the
    stage ends. The same command into the same run directory skips every stage it lists, so a
    killed pipeline loses at most the stage it was in (which resumes from its own checkpoints and
    keyed logs)."""

    def __init__(self, path: Path, digest: str):
        self.path, self.done, self.started = path, {}, time.time()
        if path.is_file():  # a kill during add() may have cut the last line: drop it
            text = path.read_text()
            if text and not text.endswith("\n"):
                path.write_text(text[: text.rfind("\n") + 1])
        for line in whole_records(path) if path.is_file() else []:
            if line["config"] != digest:
                raise ConfigError(
                    f"{path.parent} holds a pipeline run with another config (stage "
                    f"{line['stage']}); resume it with the same command, or choose a new "
                    "hydra.run.dir"
                )
            self.done[line["stage"]] = line
        self.digest = digest

    def get(self, stage: str) -> dict | None:
        if stage in self.done:
            console.print(f"[dim]stage {stage}: finished before, kept ({self.path})[/]")
        return self.done.get(stage)

    def wait(self, stage: str, record: Path, poll_s: float = 1.0) -> dict:
        """The stage as rank 0 logs it: the other processes of a multi-process pipeline (srun,
        torchrun) train with it but leave every other stage to rank 0."""
        while stage not in self.done:
            for line in whole_records(self.path) if self.path.is_file() else []:
                self.done[line["stage"]] = line
            # failed in this attempt (a resumed run's record says failed until rank 0 rewrites it)
            failed = (
                record.is_file()
                and record.stat().st_mtime > self.started
                and json.loads(record.read_text())["status"] == "failed"
            )
            if stage not in self.done and failed:
                raise RuntimeError(f"rank 0 failed before it finished stage {stage}; see {record}")
            time.sleep(0 if stage in self.done else poll_s)
        return self.done[stage]

    def add(self, stage: str, metrics: dict[str, Any], outputs: dict[str, Any]) -> None:
        line = {"stage": stage, "config": self.digest, "metrics": metrics,
                "outputs": {k: str(v) for k, v in outputs.items()}}  # fmt: skip
        append_jsonl(self.path, [line])
        self.done[stage] = line


def release_accelerator_memory() -> None:
    """Hand the memory a training stage cached back to the device."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Journey:
    """The pipeline's running state: the policy config (its model.path moves to each new
    export), the accuracy columns of the final table, the summary metrics, and the stages
    finished before (a resumed run skips them)."""

    def __init__(self, cfg: Any, run: Any):
        self.cfg, self.run = cfg, run
        self.policy = copy.deepcopy(cfg)
        self.columns: dict[str, dict] = {}
        self.summary: dict[str, Any] = {}
        self.outputs: dict[str, Path] = {}
        self.log = StageLog(run.dir / "stages.jsonl", config_digest(cfg))

    def run_stage(self, name: str, job: Any, stage_cfg: Any) -> JobResult:
        """A data job (label, synthesize, sample) in its own sub-directory, kept."""
        return self.keep(name, lambda: job(stage_cfg, in_dir(self.run, name)))

    def keep(self, stage: str, work: Any, every_rank: bool = False) -> JobResult:
        """The stage's result: from the stage log if it finished before, else `work()`'s,
        logged. Only rank 0 works on a stage, unless every_rank (training): the others wait for
        its result."""
        done = self.log.get(stage)
        if done is None and self.run.rank > 0 and not every_rank:
            release_accelerator_memory()  # rank 0 may need this GPU for vLLM meanwhile
            done = self.log.wait(stage, self.run.dir / "run.json")
        if done:
            result = JobResult(done["metrics"], {k: Path(v) for k, v in done["outputs"].items()})
        else:
            result = work()
            if self.run.rank == 0:
                self.log.add(stage, result.metrics, result.outputs)
        self.summary.update(result.metrics)
        self.outputs.update({f"{stage}/{k}": Path(v) for k, v in result.outputs.items()})
        if stage == self.cfg.pipeline.until:
            raise UntilReached(stage)
        return result

    def evaluate(self, name: str, column: str, model_dir: Path | None = None) -> None:
        """Evaluate the base model (model_dir None) or a stage's export into evaluate_<name>/."""
        stage_cfg = copy.deepcopy(self.cfg)
        if model_dir is not None:
            stage_cfg.model.path = str(model_dir)
        out = self.run.dir / f"evaluate_{name}"

        def work() -> JobResult:
            result = evaluate(stage_cfg, out, self.run, prefix=f"{name}/")
            metrics = {f"{name}/mean_accuracy": result["mean_accuracy"]}
            return JobResult(metrics, {"metrics": out / "metrics.json"})

        evaluated = self.keep(f"evaluate_{name}", work)
        self.columns[column] = json.loads(evaluated.outputs["metrics"].read_text())["tasks"]

    def train(self, name: str, stage_cfg: Any, column: str) -> None:
        """Train a stage from the current policy, evaluate its export, make it the policy. A stage
        killed before resumes from its newest checkpoint (trainer.resume null -> auto)."""
        stage_cfg.trainer.resume = stage_cfg.trainer.resume or "auto"
        work = lambda: trainer.train(stage_cfg, self.run.dir / name, self.run, prefix=f"{name}/")  # noqa: E731
        trained = self.keep(name, work, every_rank=True)
        self.policy.model.path = str(trained.outputs["model"])
        self.evaluate(name, column, trained.outputs["model"])


def run(cfg: Any, run: Any) -> JobResult:
    stages = list(cfg.pipeline.stages)
    check_stages(stages, cfg.pipeline.preference.data)
    names = stage_names(cfg)
    if cfg.pipeline.until is not None and cfg.pipeline.until not in names:
        raise ConfigError(
            f"pipeline.until={cfg.pipeline.until!r}: this pipeline's stages are {names}"
        )
    if cfg.pipeline.submit not in ("none", "slurm", "local"):
        raise ConfigError(f"pipeline.submit={cfg.pipeline.submit!r}: one of none, slurm, local")
    if cfg.pipeline.submit != "none":
        from citrus import cluster

        return cluster.submit(cfg, run, names, same_command(run))
    journey = Journey(cfg, run)
    try:
        journey_through(cfg, run, journey, stages)
    except UntilReached:  # a submitted job's share is done; the last one finishes the run
        if cfg.pipeline.until != names[-1]:
            summary = {**journey.summary, "pipeline/until": cfg.pipeline.until}
            return JobResult(summary, journey.outputs, "paused")
    return finish(cfg, run, journey)


def same_command(run: Any) -> list[str]:
    """This pipeline's command (its overrides) for a job that continues it in this run dir."""
    from citrus.record import REDACTED

    overrides = run.record.data["overrides"]
    secret = [o for o in overrides if o.endswith("=" + REDACTED)]
    if secret:
        raise ConfigError(f"{secret}: pass secrets through the environment, not as overrides")
    drop = ("hydra.run.dir=", "hydra.mode=", "pipeline.submit=")
    keep = [o for o in overrides if not o.startswith(drop)]
    # a sweep preset sets hydra.mode=MULTIRUN: each job continues this one run
    return ["pipeline", *keep, "hydra.mode=RUN", f"hydra.run.dir={run.dir.resolve()}"]


def journey_through(cfg: Any, run: Any, journey: Journey, stages: list[str]) -> None:
    """The stages, in order, each handing its outputs to the next."""
    journey.keep("prepare", lambda: prepare.run(cfg, run))  # the files every stage reads
    if cfg.pipeline.evaluate_base:
        journey.evaluate("base", "before")
    labeled = synthesized = pairs = None
    if "label" in stages:
        labeled = journey.run_stage("label", label.run, limited(cfg)).outputs["labeled"]
    if "synthesize" in stages:
        synthesize = journey.run_stage("synthesize", pathways.run, limited(cfg, labeled))
        synthesized = synthesize.outputs["sft"]
    if "sft" in stages:
        stages_sft = sft_stages(cfg)
        into = synthesized_into(cfg, len(stages_sft))
        for i, (name, data) in enumerate(stages_sft):
            stage_cfg = copy.deepcopy(journey.policy)
            stage_cfg.data = data
            if i == into and synthesized is not None:
                merged = synthesized.with_name("sft_data.jsonl")
                stage_cfg = with_synthesized(stage_cfg, synthesized, merged)
            journey.train(name, stage_cfg, f"after {name.upper()}")
    if "sample" in stages:
        pairs = journey.run_stage("sample", sample.run, journey.policy).outputs["pairs"]
    if "preference" in stages:
        pref = preference_config(cfg, journey.policy, pairs)
        journey.train("preference", pref, f"after {pref.algorithm.name.upper()}")
    if "rl" in stages:
        rl = rl_config(cfg, journey.policy)
        journey.train("rl", rl, f"after {rl.algorithm.name.upper()}")


def finish(cfg: Any, run: Any, journey: Journey) -> JobResult:
    """The table of accuracy after each stage, metrics.json and the plots (rank 0)."""
    if run.rank > 0:
        return JobResult(journey.summary, journey.outputs)
    if journey.columns:
        title = f"{cfg.name}: {cfg.model.name} on {cfg.benchmark.name}"
        console.print(results_table(title, journey.columns))
    (run.dir / "metrics.json").write_text(json.dumps(journey.summary, indent=2))
    run.tracker.summary({k: v for k, v in journey.summary.items() if isinstance(v, (int, float))})
    # accuracy after each stage with its 95% CI, the loss curves and margins, as the report
    # draws them: PNGs in the run directory, images in the tracker
    for key, path in report.plots(report.find_runs([run.dir]), run.dir).items():
        run.tracker.image(f"plots/{key}", path)
    return JobResult(journey.summary, journey.outputs)
