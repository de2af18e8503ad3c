"""Typed schemas behind the Hydra config tree, and where the tree lives.

Where each default lives (one place each):
- a node with a config group (model, data, algorithm, trainer, engine, ...): the group's YAML
  options in conf/ hold the values; the dataclasses in groups.py hold the shape;
- a node without a group (pipeline, serve, chat, report, synthesis, paths): its dataclass in
  nodes.py holds the defaults, and conf/config.yaml does not repeat them.

Because the root config starts from `citrus_schema`, every composed config is a structured
config: a misspelled key (`trainer.max_stepz=5`) or a wrong type (`trainer.max_steps=ten`) fails at
compose time naming the full key. Engines are the exception: each engine declares its own
settings (citrus/engines/), checked against the engine's class before a job starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from citrus.config.groups import (
    AdapterConfig,
    AlgorithmConfig,
    BenchmarkConfig,
    BenchmarkTask,
    BuildConfig,
    DataConfig,
    EngineConfig,
    HubDataConfig,
    LoggerConfig,
    ModelConfig,
    QuickstartConfig,
    RewardConfig,
    RoleConfig,
    TrainerConfig,
)
from citrus.config.nodes import (
    ChatConfig,
    ClusterConfig,
    HubConfig,
    PathsConfig,
    PipelineConfig,
    PreferenceStageConfig,
    ReportConfig,
    RLStageConfig,
    ServeConfig,
    SynthesisConfig,
)

__all__ = [
    "AdapterConfig",
    "AlgorithmConfig",
    "BenchmarkConfig",
    "BenchmarkTask",
    "BuildConfig",
    "ChatConfig",
    "ClusterConfig",
    "Config",
    "DataConfig",
    "EngineConfig",
    "HubConfig",
    "HubDataConfig",
    "LoggerConfig",
    "ModelConfig",
    "PathsConfig",
    "PipelineConfig",
    "PreferenceStageConfig",
    "QuickstartConfig",
    "RLStageConfig",
    "ReportConfig",
    "RewardConfig",
    "RoleConfig",
    "ServeConfig",
    "SynthesisConfig",
    "TrainerConfig",
]

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _tree(name: str) -> Path:
    """A top-level folder of the repo (editable install) or its copy inside the wheel."""
    packaged = PACKAGE_DIR / f"_{name}"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / name


CONF_DIR = _tree("conf")
EXPERIMENTS_DIR = _tree("experiments")
SWEEPS_DIR = _tree("sweeps")


@dataclass
class Config:
    job: str = MISSING  # set by the `citrus` command: train | evaluate | pipeline | ...
    name: str = "default"  # experiment name (W&B group, report titles)
    seed: int = 1234
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)  # what grpo's rollouts score
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    # typed by the engine's own settings (citrus.engines.settings_of), checked before a job starts
    engine: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    # role name -> the LLM that plays it (conf/role/)
    roles: dict[str, RoleConfig] = field(default_factory=dict)
    # the data jobs: label, synthesize, sample, decontaminate
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    hub: HubConfig = field(default_factory=HubConfig)  # push, download
    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # pipeline.submit=slurm
    # a multirun's objective (Optuna): the job returns this metric of its run.json, e.g.
    # preference/mean_accuracy; a failed job returns NaN, which Optuna records as a failed trial
    optimized_metric: str | None = None


def register_configs() -> None:
    """Store the schema, and make experiments/*.yaml and sweeps/*.yaml the `experiment` and
    `sweep` groups, so presets live in the top-level folders researchers look in."""
    cs = ConfigStore.instance()
    cs.store(name="citrus_schema", node=Config)
    for group, folder in (("experiment", EXPERIMENTS_DIR), ("sweep", SWEEPS_DIR)):
        for path in sorted(folder.glob("*.yaml")):
            cs.store(group=group, name=path.stem, node=OmegaConf.load(path), package="_global_")
