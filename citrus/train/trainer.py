"""`citrus train`: SFT and preference optimization (CPO, CPO-SimPO, SimPO, DPO, ORPO) with
Lightning Fabric.

The script owns the loop; Fabric owns devices, strategy (single, DDP, FSDP2) and precision. One
optimizer step consumes `grad_accum_steps` micro-batches per process; every loss term is a sum
divided by its count over the whole step (target tokens, pairs), so the loss does not depend on
how a step is split into micro-batches. The run directory ends up with:

    checkpoints/step-XXXXXX/   every trainer.checkpoint_every steps (see checkpoint.py); resume
                               with trainer.resume=auto (this run dir) or =<checkpoint or run dir>
    model/                     the final model, tokenizer and config (save_pretrained, LoRA merged):
                               load it with `model.path=<run_dir>` or serve it with vLLM
    train_log.jsonl            every logged step (loss, lr, grad norm, tokens/s, preference metrics)
    metrics.json               final loss, throughput, time
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from citrus.data.prepare import training_file
from citrus.data.schema import append_jsonl, load_records, whole_records, write_jsonl_atomic
from citrus.models import load_model, load_tokenizer
from citrus.tracking import progress_bar
from citrus.train import losses, packed_attention
from citrus.train.checkpoint import find_checkpoint, restore_rng, rng_state, save_checkpoint
from citrus.train.data import (
    IGNORE,
    Collator,
    PackedCollator,
    PairCollator,
    pack,
    tokenize_pair,
    tokenize_sft,
)
from citrus.train.launch import start_workers
from citrus.train.schedule import warmup_cosine
from citrus.train.strategy import build_strategy

log = logging.getLogger(__name__)
OBJECTIVES = {
    "sft": "sft",
    "cpo": "preference",
    "dpo": "preference",
    "orpo": "preference",
}  # objective -> data.format


def check_config(cfg: Any) -> None:
    """Fail before any work on settings that cannot train."""
    t, a = cfg.trainer, cfg.algorithm
    if a.objective not in OBJECTIVES:
        raise ValueError(f"algorithm.objective={a.objective!r}: one of {list(OBJECTIVES)}")
    if (
        a.objective in losses.PAIR_LOSS_TYPES
        and a.loss_type not in losses.PAIR_LOSS_TYPES[a.objective]
    ):
        raise ValueError(
            f"algorithm.loss_type={a.loss_type!r} is not a {a.objective} loss; one of {list(losses.PAIR_LOSS_TYPES[a.objective])}"
        )
    if cfg.data.format != OBJECTIVES[a.objective]:
        raise ValueError(
            f"algorithm={a.name} trains on {OBJECTIVES[a.objective]} records, but data={cfg.data.name} "
            f"has data.format={cfg.data.format!r}"
        )
    if t.packing and a.objective != "sft":
        raise ValueError(
            f"trainer.packing=true: only sft packs examples; {a.name} scores whole chosen/rejected pairs"
        )
    if a.reference and a.objective != "dpo":
        raise ValueError(
            f"algorithm.reference is set, but only dpo uses a reference model (algorithm={a.name})"
        )
    if cfg.adapter.name not in ("none", "lora"):
        raise ValueError(f"adapter.name={cfg.adapter.name!r}: one of ['none', 'lora']")
    if cfg.adapter.name != "none" and t.strategy == "fsdp2":
        raise ValueError(
            "adapter=lora with trainer.strategy=fsdp2 is not supported yet; use trainer.strategy=ddp for LoRA"
        )
    for key in ("micro_batch_size", "grad_accum_steps", "devices", "num_nodes"):
        if t[key] < 1:
            raise ValueError(f"trainer.{key} must be >= 1, got {t[key]}")
    if t.global_batch_size is not None:
        per_step = t.micro_batch_size * t.devices * t.num_nodes
        if t.global_batch_size % per_step:
            raise ValueError(
                f"trainer.global_batch_size={t.global_batch_size} is not a multiple of micro_batch_size x devices x "
                f"num_nodes = {per_step}, so no whole number of accumulation steps gives it"
            )
        if t.global_batch_size // per_step != t.grad_accum_steps:
            raise ValueError(
                f"trainer.global_batch_size={t.global_batch_size} needs grad_accum_steps="
                f"{t.global_batch_size // per_step}, got {t.grad_accum_steps}"
            )
    if t.max_steps < 1 and not t.max_epochs:
        raise ValueError("set trainer.max_steps >= 1 or trainer.max_epochs")
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ValueError(f"trainer.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")


def build_dataset(cfg: Any, tokenizer, run: Any) -> tuple[list[dict], Callable]:
    """Tokenized examples (packed rows with trainer.packing) and the collator that batches them."""
    path = training_file(cfg.data, cfg.paths.data_dir)
    run.record.add_input(path, f"data/{cfg.data.name}")
    records = load_records(path, cfg.data.format)
    if cfg.data.format == "preference":
        return [tokenize_pair(r, tokenizer, cfg.model.max_length) for r in records], PairCollator(
            tokenizer.pad_token_id
        )
    examples = [
        tokenize_sft(r, tokenizer, cfg.model.max_length, cfg.algorithm.completion_only_loss)
        for r in records
    ]
    if cfg.trainer.packing:
        rows = pack(examples, cfg.model.max_length)
        log.info(
            "packed %d examples into %d rows of <= %d tokens",
            len(examples),
            len(rows),
            cfg.model.max_length,
        )
        return rows, PackedCollator(tokenizer.pad_token_id)
    return examples, Collator(tokenizer.pad_token_id)


def micro_batches(n: int, t: Any, seed: int, world: int, rank: int, start: int):
    """Index lists of this rank's micro-batches, from global micro-batch `start` on, epoch after
    epoch. Each epoch is a permutation seeded by (seed, epoch), so a resumed run sees the data in
    the order an uninterrupted one would."""
    per_epoch = n // (t.micro_batch_size * world)
    if per_epoch == 0:
        raise ValueError(
            f"{n} training examples cannot fill one micro-batch of {t.micro_batch_size} on {world} processes"
        )
    epoch, offset = divmod(start, per_epoch)
    while True:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for b in range(offset, per_epoch):
            first = (b * world + rank) * t.micro_batch_size
            yield order[first : first + t.micro_batch_size]
        epoch, offset = epoch + 1, 0


def total_steps(t: Any, n_examples: int, world: int = 1) -> int:
    steps_per_epoch = max(1, n_examples // (t.micro_batch_size * t.grad_accum_steps * world))
    limits = [t.max_steps] if t.max_steps > 0 else []
    if t.max_epochs:
        limits.append(steps_per_epoch * t.max_epochs)
    return min(limits)


def configure_optimizer(model: torch.nn.Module, t: Any) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-d parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": t.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    # fused: one kernel for every parameter (CPU and CUDA), as Hugging Face's Trainer defaults to
    return torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), fused=True)


def add_adapter(model: torch.nn.Module, adapter: Any) -> torch.nn.Module:
    if adapter.name == "none":
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=list(adapter.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside Fabric's wrapper."""
    return model.module if hasattr(model, "module") else model


def gather_full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of an FSDP2 model, on CPU."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    inner = unwrapped(model)
    full = get_model_state_dict(
        inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    # named_parameters lists a tied weight once (embeddings, not lm_head): save it once too
    keep = {n for n, _ in inner.named_parameters()} | {n for n, _ in inner.named_buffers()}
    return {k: v for k, v in full.items() if k in keep}


def export(
    model: torch.nn.Module, tokenizer, cfg: Any, out: Path, state_dict: dict | None = None
) -> Path:
    """A Hugging Face model directory (what AutoModel, vLLM and `model.path=` load); LoRA
    adapters are merged into the base weights first; `state_dict` replaces sharded weights."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, state_dict=state_dict)
    tokenizer.save_pretrained(out)
    (out / "citrus_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return out


# --- objectives: (model, micro-batch, counts over the whole step) -> (loss, metric sums) ---------


def step_counts(window: list[dict], objective: str) -> dict[str, int]:
    """Denominators of the step's loss terms, summed over its micro-batches."""
    targets = lambda labels: int((labels[:, 1:] != IGNORE).sum())  # noqa: E731
    if objective == "sft":
        return {"tokens": sum(targets(b["labels"]) for b in window)}
    pairs = [b["input_ids"].shape[0] // 2 for b in window]
    return {
        "pairs": sum(pairs),
        "chosen_tokens": sum(targets(b["labels"][:n]) for b, n in zip(window, pairs)),
        "chosen_sequence_tokens": sum(
            int(b["attention_mask"][:n, 1:].sum()) for b, n in zip(window, pairs)
        ),  # orpo
    }


def forward(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    # use_cache=False matters beyond memory: with a cache, transformers ignores the restarted
    # position ids of packed rows and lets examples attend to each other
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    return model(**inputs, use_cache=False).logits


def sft_objective(model, batch, counts, algo, reference) -> tuple[torch.Tensor, dict[str, float]]:
    nll, _ = losses.token_nll_sum(forward(model, batch), batch["labels"])
    return nll / counts["tokens"], {"loss": float(nll.detach()) / counts["tokens"]}


def preference_objective(
    model, batch, counts, algo, reference
) -> tuple[torch.Tensor, dict[str, float]]:
    """CPO / SimPO / DPO / ORPO on a batch of [chosen; rejected] rows."""
    logits = forward(model, batch)
    n = batch["input_ids"].shape[0] // 2
    logps, lengths = losses.sequence_logps(logits, batch["labels"])
    avg = logps / lengths.clamp(min=1)
    chosen_nll = -logps[:n].sum()  # summed over the chosen replies' tokens
    if algo.objective == "cpo":
        averaged = algo.loss_type in ("ipo", "simpo")  # as in CPO/SimPO: length-normalized rewards
        c, r = (avg[:n], avg[n:]) if averaged else (logps[:n], logps[n:])
        pair = losses.cpo_loss(
            c, r, algo.beta, algo.loss_type, algo.label_smoothing, algo.simpo_gamma
        )
        loss = pair.sum() / counts["pairs"] + algo.cpo_alpha * chosen_nll / counts["chosen_tokens"]
        chosen_reward, rejected_reward = algo.beta * c.detach(), algo.beta * r.detach()
    elif algo.objective == "orpo":
        pair, _ = losses.orpo_loss(avg[:n], avg[n:], algo.beta)
        # ORPO's SFT term covers prompt and reply, as in its reference code and TRL
        whole = batch["input_ids"][:n].masked_fill(batch["attention_mask"][:n] == 0, IGNORE)
        chosen_nll = losses.token_nll_sum(logits[:n], whole)[0]
        loss = pair.sum() / counts["pairs"] + chosen_nll / counts["chosen_sequence_tokens"]
        chosen_reward, rejected_reward = algo.beta * avg[:n].detach(), algo.beta * avg[n:].detach()
    else:  # dpo
        with torch.no_grad():
            ref_logps, _ = losses.sequence_logps(reference(batch), batch["labels"])
        pair = losses.dpo_loss(
            logps[:n],
            logps[n:],
            ref_logps[:n],
            ref_logps[n:],
            algo.beta,
            algo.loss_type,
            algo.label_smoothing,
            lengths[:n],
            lengths[n:],
        )
        loss = pair.sum() / counts["pairs"]
        chosen_reward = algo.beta * (logps[:n] - ref_logps[:n]).detach()
        rejected_reward = algo.beta * (logps[n:] - ref_logps[n:]).detach()
    share = n / counts["pairs"]  # this micro-batch's part of the step's per-pair means
    metrics = {
        "loss": float(loss.detach()),
        "nll": float(chosen_nll.detach())
        / counts["chosen_sequence_tokens" if algo.objective == "orpo" else "chosen_tokens"],
        "rewards/chosen": float(chosen_reward.mean()) * share,
        "rewards/rejected": float(rejected_reward.mean()) * share,
        "rewards/margins": float((chosen_reward - rejected_reward).mean()) * share,
        "rewards/accuracies": float((chosen_reward > rejected_reward).float().mean()) * share,
        "logps/chosen": float(logps[:n].detach().mean()) * share,
        "logps/rejected": float(logps[n:].detach().mean()) * share,
    }
    return loss, metrics


def build_reference(cfg: Any, model: torch.nn.Module, fabric: L.Fabric) -> Callable | None:
    """DPO's frozen reference as a function batch -> logits: a model loaded from
    algorithm.reference, or a frozen copy of the initial policy; under LoRA with no reference
    given, the base model itself with adapters switched off (no second copy of the weights)."""
    if cfg.algorithm.objective != "dpo":
        return None
    if cfg.adapter.name != "none" and not cfg.algorithm.reference:
        return lambda batch: _without_adapters(model, batch)
    ref_cfg = (
        OmegaConf.merge(cfg.model, {"path": cfg.algorithm.reference})
        if cfg.algorithm.reference
        else cfg.model
    )
    reference = load_model(ref_cfg).eval().requires_grad_(False)
    reference = (
        fabric.setup_module(reference) if fabric.world_size > 1 else fabric.to_device(reference)
    )
    return lambda batch: forward(reference, batch)


def _without_adapters(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    with unwrapped(model).disable_adapter():
        return forward(model, batch)


def all_sum(fabric: L.Fabric, values: dict[str, float]) -> dict[str, float]:
    """Sum a dict of numbers over every process."""
    tensors = {
        k: torch.tensor(float(v), dtype=torch.float64, device=fabric.device)
        for k, v in values.items()
    }
    return {k: float(v) for k, v in fabric.all_reduce(tensors, reduce_op="sum").items()}


def forget_after(log_path: Path, step: int) -> None:
    """Drop the log lines of steps this run will (re)do, so the curve has each step once: those
    after the checkpoint it resumes from, all of them on a fresh start, and a line a kill cut."""
    if log_path.is_file():
        write_jsonl_atomic(
            log_path, [row for row in whole_records(log_path) if row["step"] <= step]
        )


OBJECTIVE_FNS = {
    "sft": sft_objective,
    "cpo": preference_objective,
    "dpo": preference_objective,
    "orpo": preference_objective,
}


def train(cfg: Any, out_dir: Path, run: Any, prefix: str = "train/") -> dict[str, Any]:
    """Train cfg.model on cfg.data with cfg.algorithm; returns metrics and the exported model directory."""
    check_config(cfg)
    t, algo = cfg.trainer, cfg.algorithm
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = start_workers(cfg, out_dir)
    fabric = L.Fabric(
        accelerator=t.accelerator,
        strategy=build_strategy(t),
        devices=t.devices,
        num_nodes=t.num_nodes,
        precision=t.precision,
    )
    fabric.launch()
    fabric.seed_everything(cfg.seed, verbose=False)
    tokenizer = load_tokenizer(cfg.model)
    dataset, collate = build_dataset(cfg, tokenizer, run)
    steps = total_steps(t, len(dataset), fabric.world_size)
    warmup = int(t.warmup_ratio * steps)

    base = load_model(cfg.model)
    attention = base.config._attn_implementation
    if t.packing:  # each packed example attends to itself only, at sum(L_i^2) cost
        base.config._attn_implementation = packed_attention.NAME
    model = add_adapter(base, cfg.adapter)
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = fabric.setup_module(model)
    optimizer = fabric.setup_optimizers(configure_optimizer(model, t))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, steps, warmup, t.min_lr_ratio)
    )
    reference = build_reference(cfg, model, fabric)
    objective = OBJECTIVE_FNS[algo.objective]

    # plain values besides model and optimizer: FSDP2's distributed checkpoint loads other stateful
    # objects back as dicts instead of into the object
    state: dict[str, Any] = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler.state_dict(),
        "step": 0,
        "rng": rng_state(),
    }
    # LoRA checkpoints hold only the adapters: the base weights never change
    saved_only = {"model": lambda k, v: "lora_" in k} if cfg.adapter.name != "none" else None
    resume_from = find_checkpoint(t.resume, out_dir)
    if resume_from:
        fabric.load(resume_from / "state.ckpt", state, strict=saved_only is None)
        restore_rng(state["rng"])
        scheduler.load_state_dict(state["scheduler"])
        log.info("resumed from %s at step %d", resume_from, state["step"])
    if fabric.is_global_zero:
        forget_after(out_dir / "train_log.jsonl", state["step"])
    step = state["step"]
    log.info(
        "%s %s on %d examples: steps %d..%d, each %d micro-batch(es) of %d on each of %d process(es) (%s)",
        algo.name,
        cfg.model.name,
        len(dataset),
        step,
        steps,
        t.grad_accum_steps,
        t.micro_batch_size,
        fabric.world_size,
        fabric.device,
    )

    batches = micro_batches(
        len(dataset), t, cfg.seed, fabric.world_size, fabric.global_rank, step * t.grad_accum_steps
    )
    model.train()
    losses_seen, tokens_seen, padded_seen, logged = [], 0, 0, {}
    started = time.perf_counter()
    bar = progress_bar() if fabric.is_global_zero else nullcontext()
    with bar:
        task = (
            bar.add_task("train", total=steps, completed=step, info="")
            if fabric.is_global_zero
            else None
        )
        while step < steps:
            window = [
                fabric.to_device(collate([dataset[i] for i in next(batches)]))
                for _ in range(t.grad_accum_steps)
            ]
            counts = step_counts(window, algo.objective)
            if fabric.world_size > 1:  # divide by the counts of the whole step, over every process
                counts = {k: int(v) for k, v in all_sum(fabric, counts).items()}
            sums: dict[str, float] = {}
            for i, batch in enumerate(window):
                with fabric.no_backward_sync(model, enabled=i < len(window) - 1):
                    loss, metrics = objective(model, batch, counts, algo, reference)
                    # DDP / FSDP average gradients over processes; each loss is already a share of the global sum
                    fabric.backward(loss * fabric.world_size)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                tokens_seen += batch["tokens"]
                padded_seen += batch["input_ids"].numel()
            if fabric.world_size > 1:
                sums = all_sum(fabric, sums)
            grad_norm = fabric.clip_gradients(
                model, optimizer, max_norm=t.max_grad_norm, error_if_nonfinite=False
            )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            losses_seen.append(sums["loss"])
            if task is not None:
                bar.update(task, advance=1, info=f"loss {sums['loss']:.3f}")
            if step % t.log_every == 0 or step == steps:
                elapsed = time.perf_counter() - started
                logged = {
                    **{f"{prefix}{k}": v for k, v in sums.items()},
                    f"{prefix}lr": scheduler.get_last_lr()[0],
                    f"{prefix}grad_norm": float(grad_norm),
                    f"{prefix}tokens_per_s": tokens_seen * fabric.world_size / elapsed,
                    f"{prefix}padding_efficiency": tokens_seen / max(1, padded_seen),
                }
                if fabric.is_global_zero:
                    run.tracker.log(logged, step=step)
                    append_jsonl(out_dir / "train_log.jsonl", [{"step": step, **logged}])
                    log.info(
                        "step %d/%d loss %.4f lr %.2e",
                        step,
                        steps,
                        sums["loss"],
                        logged[f"{prefix}lr"],
                    )
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step < steps:
                state.update(step=step, rng=rng_state(), scheduler=scheduler.state_dict())
                save_checkpoint(
                    fabric,
                    out_dir / "checkpoints",
                    step,
                    state,
                    cfg,
                    tokenizer,
                    getattr(run.record, "path", None),
                    t.keep_checkpoints,
                    saved_only,
                )

    elapsed = time.perf_counter() - started
    model_dir = out_dir / "model"
    base.config._attn_implementation = attention  # the export loads with the usual attention
    full_state = (
        gather_full_state(model) if t.strategy == "fsdp2" else None
    )  # a collective: every rank
    if fabric.is_global_zero:
        export(unwrapped(model), tokenizer, cfg, model_dir, full_state)
    fabric.barrier()
    tail = losses_seen[-max(1, min(10, len(losses_seen))) :] or [float("nan")]
    result = {
        f"{prefix}final_loss": sum(tail) / len(tail),
        f"{prefix}first_loss": losses_seen[0] if losses_seen else float("nan"),
        f"{prefix}steps": step,
        f"{prefix}tokens_per_s": tokens_seen * fabric.world_size / elapsed,
        f"{prefix}padding_efficiency": tokens_seen / max(1, padded_seen),
        f"{prefix}seconds": elapsed,
        **{k: v for k, v in logged.items() if "/rewards/" in k or "/logps/" in k},
    }
    if fabric.is_global_zero:
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        log.info(
            "exported %s (final loss %.4f, %.0f tokens/s)",
            model_dir,
            result[f"{prefix}final_loss"],
            result[f"{prefix}tokens_per_s"],
        )
    if fabric.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # a later job in this process starts its own
    if workers:
        workers.join()
    return {**result, "model_dir": str(model_dir)}


def run(cfg: Any, run: Any) -> dict[str, Any]:
    return train(cfg, run.dir, run)
