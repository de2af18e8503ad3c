"""The trained model as a Hugging Face directory in model.dtype: what AutoModel, vLLM and
`model.path=` load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from citrus.models import DTYPES


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside Fabric's wrapper."""
    return model.module if hasattr(model, "module") else model


def _saved(model: torch.nn.Module) -> set[str]:
    """Names save_pretrained writes: parameters (a tied weight once, under its first name) and
    persistent buffers."""
    buffers = {n for n, _ in model.named_buffers()} & model.state_dict().keys()
    return {n for n, _ in model.named_parameters()} | buffers


def gather_full_state(model: torch.nn.Module, dtype: str) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of an FSDP2 model in `dtype`, on CPU, one tensor at a
    time: rank 0 holds one copy in the export dtype, never a float32 one. A collective: every
    rank calls it (the others get an empty dict)."""
    from torch.distributed.tensor import DTensor

    inner, rank0 = unwrapped(model), torch.distributed.get_rank() == 0
    keep, full = _saved(inner), {}
    for name, tensor in inner.state_dict().items():
        if name not in keep:
            continue
        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()
        if rank0:
            full[name] = _cast(tensor.detach(), DTYPES[dtype]).cpu()
    return full


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype) if t.is_floating_point() else t


def export(
    model: torch.nn.Module, tokenizer: Any, cfg: Any, out: Path, state_dict: dict | None = None
) -> Path:
    """Save model, tokenizer and the resolved config into `out`, weights in model.dtype whatever
    the training precision; LoRA adapters are merged into the base weights first; `state_dict`
    (gathered from shards) replaces the model's own."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    dtype = DTYPES[cfg.model.dtype]
    if state_dict is None:
        keep = _saved(model)
        state_dict = {k: _cast(v, dtype) for k, v in model.state_dict().items() if k in keep}
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, state_dict=state_dict)
    model.config.dtype = dtype  # save_pretrained wrote the training dtype; the weights are this
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "citrus_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return out
