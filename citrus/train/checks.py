"""Settings that cannot train, found before any work (a model load or a data read)."""

from __future__ import annotations

from typing import Any

from citrus.errors import ConfigError
from citrus.train.objectives import objective_of
from citrus.train.strategy import PARAM_DTYPES, STRATEGIES
from citrus.train.tokenize import TRUNCATION


def check_config(cfg: Any) -> None:
    t, a = cfg.trainer, cfg.algorithm
    objective = objective_of(a)
    if cfg.data.format != objective.data_format:
        raise ConfigError(
            f"algorithm={a.name} trains on {objective.data_format} records, but "
            f"data={cfg.data.name} has data.format={cfg.data.format!r}"
        )
    if t.packing and objective.data_format != "sft":
        raise ConfigError(
            f"trainer.packing=true: only sft packs examples; {a.name} scores whole replies"
        )
    if a.reference and not objective.needs_reference(a):
        raise ConfigError(
            f"algorithm.reference is set, but loss {a.loss!r} uses no reference model here "
            "(grpo: only with algorithm.beta > 0)"
        )
    if t.precision not in PARAM_DTYPES:
        raise ConfigError(f"trainer.precision={t.precision!r}: one of {list(PARAM_DTYPES)}")
    if cfg.data.truncation not in TRUNCATION:
        raise ConfigError(f"data.truncation={cfg.data.truncation!r}: one of {list(TRUNCATION)}")
    limit = cfg.data.max_length or cfg.model.max_length
    if cfg.data.max_prompt_length is not None and not 0 < cfg.data.max_prompt_length < limit:
        raise ConfigError(
            f"data.max_prompt_length={cfg.data.max_prompt_length} must be below the record "
            f"limit {limit} (data.max_length, else model.max_length), leaving room for replies"
        )
    if t.strategy not in STRATEGIES:
        raise ConfigError(f"trainer.strategy={t.strategy!r}: one of {list(STRATEGIES)}")
    if cfg.adapter.name not in ("none", "lora"):
        raise ConfigError(f"adapter.name={cfg.adapter.name!r}: one of ['none', 'lora']")
    if cfg.adapter.name != "none" and t.strategy == "fsdp2":
        raise ConfigError(
            "adapter=lora with trainer.strategy=fsdp2 is not supported yet; "
            "use trainer.strategy=ddp for LoRA"
        )
    check_batch(t)
    if objective.data_format == "prompt":
        check_online(cfg)
    if t.max_steps < 1 and not t.max_epochs:
        raise ConfigError("set trainer.max_steps >= 1 or trainer.max_epochs")
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ConfigError(f"trainer.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")


def check_batch(t: Any) -> None:
    for key in ("micro_batch_size", "grad_accum_steps", "devices", "num_nodes"):
        if t[key] < 1:
            raise ConfigError(f"trainer.{key} must be >= 1, got {t[key]}")
    if t.global_batch_size is None:
        return
    per_step = t.micro_batch_size * t.devices * t.num_nodes
    if t.global_batch_size % per_step:
        raise ConfigError(
            f"trainer.global_batch_size={t.global_batch_size} is not a multiple of "
            f"micro_batch_size x devices x num_nodes = {per_step}, so no whole number of "
            "accumulation steps gives it"
        )
    if t.global_batch_size // per_step != t.grad_accum_steps:
        raise ConfigError(
            f"trainer.global_batch_size={t.global_batch_size} needs "
            f"grad_accum_steps={t.global_batch_size // per_step}, got {t.grad_accum_steps}"
        )


def check_online(cfg: Any) -> None:
    """GRPO's settings: sampling, loss, rewards, and steps that resume at a fresh rollout."""
    from citrus.train.rewards import check_rewards

    t, a = cfg.trainer, cfg.algorithm
    if a.num_generations < 2:
        raise ConfigError(
            f"algorithm.num_generations={a.num_generations}: a group needs 2 or more completions "
            "to have an advantage"
        )
    if a.temperature <= 0 or a.max_new_tokens < 1 or not 0 < a.top_p <= 1:
        raise ConfigError(
            "algorithm: sampling needs temperature > 0, max_new_tokens >= 1, top_p in (0, 1]"
        )
    if not 0 <= a.epsilon < 1 or (a.epsilon_high is not None and a.epsilon_high < 0) or a.beta < 0:
        raise ConfigError("algorithm: epsilon in [0, 1), epsilon_high >= 0 and beta >= 0")
    if cfg.data.truncation == "right":
        raise ConfigError(
            "data.truncation=right would cut a prompt's end, where its completion starts: "
            "use left (or error)"
        )
    room = (cfg.data.max_length or cfg.model.max_length) - a.max_new_tokens
    if room < 1:
        raise ConfigError(
            f"algorithm.max_new_tokens={a.max_new_tokens} leaves no room for a prompt in the "
            "record limit (data.max_length, else model.max_length)"
        )
    if a.loss_type not in ("grpo", "dapo", "dr_grpo"):
        raise ConfigError(f"algorithm.loss_type={a.loss_type!r}: one of grpo, dapo, dr_grpo")
    if a.scale_rewards not in ("group", "batch", "none"):
        raise ConfigError(f"algorithm.scale_rewards={a.scale_rewards!r}: group, batch or none")
    if a.num_iterations < 1 or (t.checkpoint_every and t.checkpoint_every % a.num_iterations):
        raise ConfigError(
            f"algorithm.num_iterations={a.num_iterations}: >= 1, and trainer.checkpoint_every="
            f"{t.checkpoint_every} a multiple of it (a checkpoint falls between rollouts)"
        )
    if cfg.data.val_ratio or cfg.data.val_path:
        raise ConfigError(
            f"data={cfg.data.name}: a prompt data config has no validation loss; validate with "
            "trainer.val_benchmark=true (accuracy on the benchmark group)"
        )
    check_rewards(cfg.reward)
    if "length" in cfg.reward.weights and not 0 < cfg.reward.length_cache <= a.max_new_tokens:
        raise ConfigError(
            f"reward.length_cache={cfg.reward.length_cache}: in (0, algorithm.max_new_tokens="
            f"{a.max_new_tokens}] (reward={cfg.reward.name})"
        )
