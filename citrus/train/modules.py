"""What the loop trains: the policy (backbone + adapter), the frozen reference of the losses
that have one, and the optimizer."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from citrus.models import load_model
from citrus.train.export import unwrapped
from citrus.train.objectives import Reference, forward


def build_policy(cfg: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(backbone, the module to train: the backbone or its peft wrapper)."""
    base = load_model(cfg.model)
    model = add_adapter(base, cfg.adapter)
    if cfg.trainer.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return base, model


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


def build_reference(cfg: Any, model: torch.nn.Module, fabric: L.Fabric) -> Reference:
    """The frozen reference as a function batch -> logits: a model loaded from
    algorithm.reference, or a frozen copy of the initial policy; under LoRA with no reference
    given, the base model itself with adapters switched off (no second copy of the weights)."""
    if cfg.adapter.name != "none" and not cfg.algorithm.reference:
        return lambda batch: _without_adapters(model, batch)
    ref_cfg = cfg.model
    if cfg.algorithm.reference:
        ref_cfg = OmegaConf.merge(cfg.model, {"path": cfg.algorithm.reference})
    reference = load_model(ref_cfg).eval().requires_grad_(False)
    if fabric.world_size > 1:
        reference = fabric.setup_module(reference)
    else:
        reference = fabric.to_device(reference)
    return lambda batch: forward(reference, batch)


def _without_adapters(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    with unwrapped(model).disable_adapter():
        return forward(model, batch)


def configure_optimizer(model: torch.nn.Module, t: Any) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-d parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": t.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    # fused: one kernel for every parameter (CPU and CUDA), as Hugging Face's Trainer defaults to
    return torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), fused=True)
