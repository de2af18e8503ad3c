"""The trained model as a Hugging Face directory: what AutoModel, vLLM and `model.path=` load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside Fabric's wrapper."""
    return model.module if hasattr(model, "module") else model


def gather_full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of an FSDP2 model, on CPU. A collective: every rank
    calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    inner = unwrapped(model)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(inner, options=options)
    # named_parameters lists a tied weight once (embeddings, not lm_head): save it once too
    keep = {n for n, _ in inner.named_parameters()} | {n for n, _ in inner.named_buffers()}
    return {k: v for k, v in full.items() if k in keep}


def export(
    model: torch.nn.Module, tokenizer: Any, cfg: Any, out: Path, state_dict: dict | None = None
) -> Path:
    """Save model, tokenizer and the resolved config into `out`; LoRA adapters are merged into
    the base weights first; `state_dict` (gathered from shards) replaces the model's own."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, state_dict=state_dict)
    tokenizer.save_pretrained(out)
    (out / "citrus_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return out
