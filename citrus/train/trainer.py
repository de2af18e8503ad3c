"""`citrus train`: SFT and preference optimization with Lightning Fabric, read top to bottom as
setup -> fit -> finish (the shape of litgpt's finetune scripts).

The script owns the loop; Fabric owns devices, strategy (single, DDP, FSDP2) and precision; the
objective (objectives.py, picked by algorithm.loss) owns the loss. One optimizer step consumes
`grad_accum_steps` micro-batches per process; every loss term is a sum divided by its count over
the whole step (target tokens, pairs), so the loss does not depend on how a step is split. The
run directory ends up with:

    checkpoints/step-XXXXXX/   every trainer.checkpoint_every steps (see checkpoint.py); resume
                               with trainer.resume=auto (this run dir) or =<checkpoint or run dir>
    model/                     the final model, tokenizer and config (save_pretrained, LoRA merged):
                               load it with `model.path=<run_dir>` or serve it with vLLM
    train_log.jsonl            every logged step (loss, lr, grad norm, tokens/s, preference metrics,
                               rollout rewards) and every validation (<prefix>val/loss, ...)
    rollouts.jsonl             online objectives (grpo): every completion rank 0 sampled, scored
    metrics.json               final loss, throughput, time
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from citrus.data.schema import append_jsonl
from citrus.models import card, load_tokenizer
from citrus.result import JobResult
from citrus.tracking import progress_bar
from citrus.train import packed_attention
from citrus.train.checkpoint import resume_training, rng_states, save_training
from citrus.train.checks import check_config
from citrus.train.data import build_dataset, micro_batches, total_steps
from citrus.train.export import export, gather_full_state, unwrapped
from citrus.train.launch import start_workers
from citrus.train.modules import build_policy, build_reference, configure_optimizer
from citrus.train.objectives import Objective, forward, objective_of
from citrus.train.rollout import Rollouts
from citrus.train.schedule import warmup_cosine
from citrus.train.strategy import all_sum, build_strategy
from citrus.train.validation import validate

log = logging.getLogger(__name__)
# the last logged step's metrics metrics.json keeps: preference rewards and log-probs, GRPO's
# rollout reward and pass rate
FINAL_KEYS = ("rewards/", "logps/", "reward", "pass_rate")


@dataclass
class Training:
    """Everything setup() builds and fit() drives."""

    cfg: Any
    fabric: L.Fabric
    tokenizer: Any
    dataset: list[dict]
    collate: Any
    base: torch.nn.Module  # the backbone (inside any adapter wrapper)
    model: Any  # what Fabric wraps
    optimizer: Any
    scheduler: Any
    steps: int
    objective: Objective  # objective_of(algorithm)
    attention: str  # the backbone's attention, restored for the export after packing
    truncated: int = 0  # records data.truncation cut
    reference: Any = None
    rollouts: Any = None  # online objectives (grpo): samples each step's batches (rollout.py)
    val_examples: list[dict] = field(default_factory=list)  # data.val_path / data.val_ratio
    val_collate: Any = None
    # what a checkpoint holds: plain values besides model and optimizer, because FSDP2's
    # distributed checkpoint loads other stateful objects back as dicts
    state: dict[str, Any] = field(default_factory=dict)
    saved_only: dict | None = None  # LoRA: checkpoints hold the adapters only


@dataclass
class FitStats:
    """What fit() counts, for the logs and the final metrics."""

    started: float = field(default_factory=time.perf_counter)
    losses: list[float] = field(default_factory=list)  # each step's loss
    tokens: int = 0  # real tokens seen by this process
    padded: int = 0  # tokens including padding
    logged: dict[str, float] = field(default_factory=dict)  # each metric's last logged value
    validated: dict[str, float] = field(default_factory=dict)  # the last validation's
    steps: int = 0
    elapsed: float = 0.0


def train(cfg: Any, out_dir: Path, run: Any, prefix: str = "train/") -> JobResult:
    """Train cfg.model on cfg.data with cfg.algorithm; the exported model is outputs["model"]."""
    check_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = start_workers(cfg, out_dir)
    try:
        training = setup(cfg, out_dir, run)
        stats = fit(training, out_dir, run, prefix)
        result = finish(training, out_dir, prefix, stats, run)
    except BaseException:
        # leave nothing of this run for the next job in this process to wait on
        if workers:
            workers.abort()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        raise
    if workers:
        workers.join()
    return result


def setup(cfg: Any, out_dir: Path, run: Any) -> Training:
    t = cfg.trainer
    fabric = L.Fabric(accelerator=t.accelerator, strategy=build_strategy(t), devices=t.devices,
                      num_nodes=t.num_nodes, precision=t.precision)  # fmt: skip
    fabric.launch()
    fabric.seed_everything(cfg.seed, verbose=False)
    tokenizer = load_tokenizer(cfg.model)
    data = build_dataset(cfg, tokenizer, run)
    dataset, collate, truncated = data.examples, data.collate, data.truncated
    steps = total_steps(t, len(dataset), fabric.world_size, repeats(cfg))
    warmup = int(t.warmup_ratio * steps)

    base, model = build_policy(cfg)
    attention = base.config._attn_implementation
    if t.packing:  # each packed example attends to itself only, at sum(L_i^2) cost
        base.config._attn_implementation = packed_attention.NAME
    model = fabric.setup_module(model)
    optimizer = fabric.setup_optimizers(configure_optimizer(model, t))
    schedule = lambda s: warmup_cosine(s, steps, warmup, t.min_lr_ratio)  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    training = Training(
        cfg=cfg, fabric=fabric, tokenizer=tokenizer, dataset=dataset, collate=collate, base=base,
        model=model, optimizer=optimizer, scheduler=scheduler, steps=steps,
        objective=objective_of(cfg.algorithm), attention=attention, truncated=truncated,
        val_examples=data.val_examples, val_collate=data.val_collate,
    )  # fmt: skip
    if training.objective.needs_reference(cfg.algorithm):
        training.reference = build_reference(cfg, model, fabric)
    if training.objective.data_format == "prompt":
        training.rollouts = Rollouts(training, out_dir)
    # the same initial weights everywhere (above), then each process its own dropout draws
    fabric.seed_everything(cfg.seed + fabric.global_rank, verbose=False)
    # losses: each step's, checkpointed, so a resumed run reports the first and final loss of the
    # whole run
    training.state = {"model": model, "optimizer": optimizer, "step": 0, "losses": [],
                      "rng": rng_states(fabric), "scheduler": scheduler.state_dict()}  # fmt: skip
    if cfg.adapter.name != "none":
        training.saved_only = {"model": lambda k, v: "lora_" in k}
    resume_training(training, out_dir)
    return training


def fit(training: Training, out_dir: Path, run: Any, prefix: str) -> FitStats:
    cfg, fabric, t = training.cfg, training.fabric, training.cfg.trainer
    step, steps = training.state["step"], training.steps
    log.info(
        "%s %s on %d examples: steps %d..%d, each %d micro-batch(es) of %d on each of %d "
        "process(es) (%s)", cfg.algorithm.name, cfg.model.name, len(training.dataset), step,
        steps, t.grad_accum_steps, t.micro_batch_size, fabric.world_size, fabric.device,
    )  # fmt: skip
    # GRPO with num_iterations mu: one step in mu draws prompts, the others reuse its rollout
    first = (step // repeats(cfg)) * t.grad_accum_steps
    rank, world = fabric.global_rank, fabric.world_size
    batches = micro_batches(len(training.dataset), t, cfg.seed, world, rank, first)
    training.model.train()
    stats = FitStats(losses=training.state["losses"])  # a resumed run's, its steps before
    bar = progress_bar() if fabric.is_global_zero else nullcontext()
    with bar:
        zero = fabric.is_global_zero
        task = bar.add_task("train", total=steps, completed=step, info="") if zero else None
        if step == 0 and validating(training, step):  # where each validation curve starts
            stats.validated = log_validation(training, step, out_dir, run, prefix)
        while step < steps:
            sums = train_step(training, batches, stats, step)
            step += 1
            stats.losses.append(sums["loss"])
            if task is not None:
                bar.update(task, advance=1, info=f"loss {sums['loss']:.3f}")
            if step % t.log_every == 0 or step == steps:
                # each key's latest value (a GRPO step reusing its rollout logs no reward)
                stats.logged.update(log_step(training, step, sums, stats, out_dir, run, prefix))
            if validating(training, step):
                stats.validated = log_validation(training, step, out_dir, run, prefix)
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step < steps:
                save_training(training, step, out_dir, run)
    stats.steps, stats.elapsed = step, time.perf_counter() - stats.started
    return stats


def train_step(training: Training, batches: Any, stats: FitStats, step: int) -> dict[str, float]:
    """One optimizer step (the step-th, from 0) over grad_accum_steps micro-batches; the step's
    metrics, summed over micro-batches and processes."""
    fabric, model, t = training.fabric, training.model, training.cfg.trainer
    objective = training.objective
    reused = training.rollouts is not None and training.rollouts.reuses(step)
    examples = [] if reused else [
        [training.dataset[i] for i in next(batches)] for _ in range(t.grad_accum_steps)
    ]  # fmt: skip
    sums: dict[str, float] = {}
    if training.rollouts is not None:  # online: this step's completions, sampled now
        window, rolled = training.rollouts.window(step, examples)
        sums = {k: v / fabric.world_size for k, v in rolled.items()}  # a mean over processes
    else:
        window = [fabric.to_device(training.collate(e)) for e in examples]
    counts = objective.counts(window)
    policy = functools.partial(forward, model, chunk_size=t.loss_chunk_size)
    if fabric.world_size > 1:  # divide by the counts of the whole step, over every process
        counts = {k: int(v) for k, v in all_sum(fabric, counts).items()}
    for i, batch in enumerate(window):
        with fabric.no_backward_sync(model, enabled=i < len(window) - 1):
            loss, metrics = objective(
                policy, batch, counts, training.cfg.algorithm, training.reference
            )
            # DDP / FSDP average gradients over processes; each loss is already a share of the sum
            fabric.backward(loss * fabric.world_size)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
        stats.tokens += batch["tokens"]
        stats.padded += batch["input_ids"].numel()
    if fabric.world_size > 1:
        sums = all_sum(fabric, sums)
    sums["grad_norm"] = float(
        fabric.clip_gradients(
            model,
            training.optimizer,
            max_norm=t.max_grad_norm or math.inf,  # 0: measure only
            error_if_nonfinite=False,
        )
    )
    sums["lr"] = training.scheduler.get_last_lr()[0]  # the rate this step used
    training.optimizer.step()
    training.optimizer.zero_grad(set_to_none=True)
    training.scheduler.step()
    return sums


def repeats(cfg: Any) -> int:
    """Optimizer steps per batch of prompts: GRPO's num_iterations, else 1."""
    return cfg.algorithm.num_iterations if cfg.data.format == "prompt" else 1


def validating(training: Training, step: int) -> bool:
    """Validate at this step? Every trainer.val_every steps (from step 0, before any update) and
    after the last one, when there is something to validate on."""
    t = training.cfg.trainer
    if not (training.val_examples or t.val_benchmark):
        return False
    return step == training.steps or bool(t.val_every and step % t.val_every == 0)


def log_validation(
    training: Training, step: int, out_dir: Path, run: Any, prefix: str
) -> dict[str, float]:
    """Validation metrics to the tracker and train_log.jsonl, at the training step they follow."""
    logged = {f"{prefix}val/{k}": v for k, v in validate(training).items()}
    if training.fabric.is_global_zero:
        run.tracker.log(logged, step=step)
        append_jsonl(out_dir / "train_log.jsonl", [{"step": step, **logged}])
        shown = " ".join(f"{k.removeprefix(prefix)} {v:.4f}" for k, v in logged.items())
        log.info("step %d/%d %s", step, training.steps, shown)
    return logged


def throughput(training: Training, stats: FitStats, prefix: str, elapsed: float | None = None):
    """tokens/s over every process and the share of real (unpadded) tokens, so far."""
    elapsed = elapsed or time.perf_counter() - stats.started
    return {
        f"{prefix}tokens_per_s": stats.tokens * training.fabric.world_size / elapsed,
        f"{prefix}padding_efficiency": stats.tokens / max(1, stats.padded),
    }


def log_step(
    training: Training, step: int, sums: dict, stats: FitStats, out_dir: Path, run: Any, prefix: str
) -> dict[str, float]:
    """The step's metrics to the tracker and train_log.jsonl (rank 0)."""
    logged = {**{f"{prefix}{k}": v for k, v in sums.items()}, **throughput(training, stats, prefix)}
    if training.fabric.is_global_zero:
        run.tracker.log(logged, step=step)
        append_jsonl(out_dir / "train_log.jsonl", [{"step": step, **logged}])
        log.info("step %d/%d loss %.4f lr %.2e", step, training.steps, sums["loss"], sums["lr"])
    return logged


def finish(training: Training, out_dir: Path, prefix: str, stats: FitStats, run: Any) -> JobResult:
    """Export the model (gathering FSDP2 shards) with its card, write metrics.json, leave the
    process group."""
    fabric, cfg = training.fabric, training.cfg
    model_dir = out_dir / "model"
    training.base.config._attn_implementation = training.attention  # the export loads as usual
    full_state = None
    if cfg.trainer.strategy == "fsdp2":
        full_state = gather_full_state(training.model, cfg.model.dtype)
    if fabric.is_global_zero:
        export(unwrapped(training.model), training.tokenizer, cfg, model_dir, full_state)
        card.write(model_dir, card.training_facts(cfg, run.record.data, prefix.rstrip("/")))
    fabric.barrier()
    losses = stats.losses
    tail = losses[-max(1, min(10, len(losses))) :] or [float("nan")]
    metrics = {
        f"{prefix}final_loss": sum(tail) / len(tail),
        f"{prefix}first_loss": losses[0] if losses else float("nan"),
        f"{prefix}steps": stats.steps,
        **throughput(training, stats, prefix, stats.elapsed),  # the loop's time, not the export
        f"{prefix}seconds": stats.elapsed,
        f"{prefix}truncated_records": training.truncated,
        # the last logged step's preference metrics, or its rollout's rewards and pass rate
        **{k: v for k, v in stats.logged.items() if any(f"/{m}" in k for m in FINAL_KEYS)},
        **stats.validated,
    }
    if fabric.is_global_zero:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("exported %s (final loss %.4f)", model_dir, metrics[f"{prefix}final_loss"])
    if fabric.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # a later job in this process starts its own
    return JobResult(metrics, {"model": model_dir})


def run(cfg: Any, run: Any) -> JobResult:
    return train(cfg, run.dir, run)
