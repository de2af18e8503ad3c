"""What the loop trains: the policy (backbone + adapter), the frozen reference of the losses
that have one, and the optimizer. Dtypes follow trainer.precision (table in strategy.py)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from citrus.models import DTYPES, load_model
from citrus.train.export import unwrapped
from citrus.train.loading import skeleton
from citrus.train.objectives import Scorer, forward
from citrus.train.strategy import fsdp2_parallelize, mixed_precision_policy, param_dtype


def build_policy(cfg: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(backbone, the module to train: the backbone or its peft wrapper). Under FSDP2 the
    backbone is built on the meta device and gets its weights once sharded (loading.py)."""
    t = cfg.trainer
    dtype = param_dtype(t.precision)
    if t.strategy == "fsdp2":
        base = skeleton(cfg.model, dtype)
    elif cfg.adapter.name != "none" and t.precision == "bf16-mixed":
        base = load_model(cfg.model)  # frozen: stays in model.dtype, autocast mixes it in
    else:
        base = load_model(cfg.model, dtype)
    model = add_adapter(base, cfg.adapter, dtype)
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return base, model


def add_adapter(model: torch.nn.Module, adapter: Any, dtype: str) -> torch.nn.Module:
    """LoRA adapters (trainable, in `dtype`) around the frozen backbone; `none`: the backbone."""
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
    model = get_peft_model(model, config)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(DTYPES[dtype])
    return model


def build_reference(cfg: Any, model: torch.nn.Module, fabric: L.Fabric) -> Scorer:
    """The frozen reference as a function batch -> token log-probs: a model loaded from
    algorithm.reference, or a frozen copy of the initial policy; under LoRA with no reference
    given, the base model itself with adapters switched off (no second copy of the weights).

    It is held and run as the policy is (same parameter dtype, FSDP2 sharding and mixed-precision
    policy, autocast), so both score a batch identically until the policy moves: every reward
    is 0 at the first step. It is never wrapped in DDP: it has nothing to synchronize."""
    t = cfg.trainer
    if cfg.adapter.name != "none" and not cfg.algorithm.reference:
        return lambda batch: _without_adapters(model, batch, t.loss_chunk_size)
    ref_cfg = cfg.model
    if cfg.algorithm.reference:
        ref_cfg = OmegaConf.merge(cfg.model, {"path": cfg.algorithm.reference})
    dtype = param_dtype(t.precision)
    if t.strategy == "fsdp2":
        reference = skeleton(ref_cfg, dtype).requires_grad_(False)
        policy = mixed_precision_policy(t.precision)
        reference = fsdp2_parallelize(reference, fabric.strategy.device_mesh, policy, frozen=True)
    else:
        reference = fabric.to_device(load_model(ref_cfg, dtype).requires_grad_(False))
    reference.eval()

    def score(batch: dict) -> torch.Tensor:
        with fabric.autocast():
            return forward(reference, batch, t.loss_chunk_size)

    return score


def _without_adapters(model: torch.nn.Module, batch: dict, chunk_size: int) -> torch.Tensor:
    with unwrapped(model).disable_adapter():
        return forward(model, batch, chunk_size)


def configure_optimizer(model: torch.nn.Module, t: Any) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-d parameters). Its state takes the
    dtype of the parameters it updates: float32 except under bf16-true."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": t.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    # fused: one kernel for every parameter (CPU and CUDA), as Hugging Face's Trainer defaults to
    return torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), fused=True)
