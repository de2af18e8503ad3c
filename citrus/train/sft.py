"""`citrus train`: supervised fine-tuning with Lightning Fabric.

The script owns the loop; Fabric owns devices and precision. One optimizer step consumes
`grad_accum_steps` micro-batches; the loss is the completion-token NLL averaged over every target
token of that step. The run directory ends up with:

    checkpoints/step-XXXXXX.ckpt   every trainer.checkpoint_every steps (model, optimizer, scheduler, step)
    model/                         the final model, tokenizer and config (save_pretrained): load it
                                   with `model.path=<run_dir>` or serve it with vLLM
    metrics.json                   final loss, throughput, time
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from citrus.data.prepare import training_file
from citrus.data.schema import load_records
from citrus.models import load_model, load_tokenizer
from citrus.tracking import progress_bar
from citrus.train.data import IGNORE, Collator, tokenize_sft
from citrus.train.losses import token_nll_sum
from citrus.train.schedule import warmup_cosine

log = logging.getLogger(__name__)
ALGORITHMS = ("sft",)


def check_config(cfg: Any) -> None:
    """Fail before any work on settings that cannot train."""
    t = cfg.trainer
    if cfg.algorithm.name not in ALGORITHMS:
        raise ValueError(f"algorithm.name={cfg.algorithm.name!r}: `citrus train` runs {list(ALGORITHMS)}")
    for key in ("micro_batch_size", "grad_accum_steps", "devices", "num_nodes"):
        if t[key] < 1:
            raise ValueError(f"trainer.{key} must be >= 1, got {t[key]}")
    if t.max_steps < 1 and not t.max_epochs:
        raise ValueError("set trainer.max_steps >= 1 or trainer.max_epochs")
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ValueError(f"trainer.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")


def build_dataset(cfg: Any, tokenizer, run: Any) -> list[dict]:
    path = training_file(cfg.data, cfg.paths.data_dir)
    run.record.add_input(path, f"data/{cfg.data.name}")
    records = load_records(path, "sft")
    return [tokenize_sft(r, tokenizer, cfg.model.max_length, cfg.algorithm.completion_only_loss) for r in records]


def total_steps(trainer_cfg: Any, n_examples: int) -> int:
    steps_per_epoch = max(1, n_examples // (trainer_cfg.micro_batch_size * trainer_cfg.grad_accum_steps))
    limits = [trainer_cfg.max_steps] if trainer_cfg.max_steps > 0 else []
    if trainer_cfg.max_epochs:
        limits.append(steps_per_epoch * trainer_cfg.max_epochs)
    return min(limits)


def configure_optimizer(model: torch.nn.Module, t: Any) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-d parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": t.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas))


def export(model: torch.nn.Module, tokenizer, cfg: Any, out: Path) -> Path:
    """A Hugging Face model directory (what AutoModel, vLLM and `model.path=` load)."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "citrus_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return out


def train(cfg: Any, out_dir: Path, run: Any, prefix: str = "train/") -> dict[str, Any]:
    """Fine-tune cfg.model on cfg.data; returns metrics and the exported model directory."""
    check_config(cfg)
    t = cfg.trainer
    fabric = L.Fabric(
        accelerator=t.accelerator, strategy=t.strategy, devices=t.devices,
        num_nodes=t.num_nodes, precision=t.precision,
    )
    fabric.seed_everything(cfg.seed, verbose=False)
    tokenizer = load_tokenizer(cfg.model)
    dataset = build_dataset(cfg, tokenizer, run)
    steps = total_steps(t, len(dataset))
    warmup = int(t.warmup_ratio * steps)

    model = load_model(cfg.model)
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    optimizer = configure_optimizer(model, t)
    model, optimizer = fabric.setup(model, optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, steps, warmup, t.min_lr_ratio)
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=t.micro_batch_size, shuffle=True, drop_last=True,
        collate_fn=Collator(tokenizer.pad_token_id),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    loader = fabric.setup_dataloaders(loader)
    log.info(
        "SFT %s on %d examples: %d steps x %d micro-batches of %d (%s)",
        cfg.model.name, len(dataset), steps, t.grad_accum_steps, t.micro_batch_size, fabric.device,
    )

    model.train()
    step, tokens_seen, window, losses = 0, 0, [], []
    started = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("train", total=steps, info="")
        while step < steps:
            for batch in loader:
                window.append(batch)
                if len(window) < t.grad_accum_steps:
                    continue
                targets = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in window)
                loss_sum = 0.0
                for i, b in enumerate(window):
                    with fabric.no_backward_sync(model, enabled=i < len(window) - 1):
                        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                        nll, _ = token_nll_sum(logits, b["labels"])
                        fabric.backward(nll / targets)
                    loss_sum += nll.item()
                    tokens_seen += int(b["attention_mask"].sum())
                grad_norm = fabric.clip_gradients(model, optimizer, max_norm=t.max_grad_norm, error_if_nonfinite=False)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                window = []
                loss = loss_sum / targets
                losses.append(loss)
                bar.update(task, advance=1, info=f"loss {loss:.3f}")
                if step % t.log_every == 0 or step == steps:
                    elapsed = time.perf_counter() - started
                    metrics = {
                        f"{prefix}loss": loss,
                        f"{prefix}lr": scheduler.get_last_lr()[0],
                        f"{prefix}grad_norm": float(grad_norm),
                        f"{prefix}tokens_per_s": tokens_seen / elapsed,
                        f"{prefix}epoch": step * t.micro_batch_size * t.grad_accum_steps / len(dataset),
                    }
                    run.tracker.log(metrics, step=step)
                    log.info("step %d/%d loss %.4f lr %.2e", step, steps, loss, metrics[f"{prefix}lr"])
                if t.checkpoint_every and step % t.checkpoint_every == 0 and step < steps:
                    ckpt = out_dir / "checkpoints" / f"step-{step:06d}.ckpt"
                    fabric.save(ckpt, {"model": model, "optimizer": optimizer, "scheduler": scheduler, "step": step})
                    log.info("checkpoint %s", ckpt)
                if step >= steps:
                    break

    elapsed = time.perf_counter() - started
    model_dir = export(model.module if hasattr(model, "module") else model, tokenizer, cfg, out_dir / "model")
    tail = losses[-max(1, min(10, len(losses))):]
    result = {
        f"{prefix}final_loss": sum(tail) / len(tail),
        f"{prefix}first_loss": losses[0],
        f"{prefix}steps": step,
        f"{prefix}tokens_per_s": tokens_seen / elapsed,
        f"{prefix}seconds": elapsed,
    }
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    log.info("exported %s (final loss %.4f, %.0f tokens/s)", model_dir, result[f"{prefix}final_loss"], result[f"{prefix}tokens_per_s"])
    return {**result, "model_dir": str(model_dir)}


def run(cfg: Any, run: Any) -> dict[str, Any]:
    return train(cfg, run.dir, run)
