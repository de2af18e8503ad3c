"""Loading a backbone for sharded training without a full copy per process.

`from_pretrained` on every rank costs 8 local ranks x 140 GB of host memory per node for a 70B
model. Under FSDP2 the backbone is instead built on the meta device (shapes, no memory), sharded,
then given memory and filled: each process reads only its own rows of each tensor from the
safetensors files (`get_slice`, one tensor at a time), so a node's host memory holds at most its
shards plus one tensor's slice per process, and every rank reads in parallel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from citrus.errors import ConfigError, MissingFileError
from citrus.models import DTYPES, is_local, resolve_path


def skeleton(model_cfg: Any, dtype: str) -> torch.nn.Module:
    """model_cfg's architecture on the meta device, in `dtype`; its config remembers the
    directory the weights come from (`config._name_or_path`)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = local_directory(resolve_path(model_cfg))
    config = AutoConfig.from_pretrained(directory, trust_remote_code=model_cfg.trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            config,
            dtype=DTYPES[dtype],
            trust_remote_code=model_cfg.trust_remote_code,
            attn_implementation=model_cfg.attn_implementation,
        )
    model.config._name_or_path = directory
    return model


def local_directory(path: str) -> str:
    """A hub id's files in the local cache (downloaded once: weights, config, tokenizer)."""
    if is_local(path):
        return path
    from huggingface_hub import snapshot_download

    return snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])


def is_meta(model: torch.nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def weight_files(directory: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (one file, or a sharded index)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: directory / file for name, file in weight_map.items()}
    single = directory / "model.safetensors"
    if not single.is_file():
        raise MissingFileError(
            f"{directory}: no model.safetensors(.index.json); sharded loading reads safetensors "
            "only (convert .bin weights with save_pretrained first)"
        )
    from safetensors import safe_open

    with safe_open(single, "pt") as f:
        return dict.fromkeys(f.keys(), single)


def materialize(model: torch.nn.Module, mesh: Any) -> None:
    """Give a sharded meta model memory on this process's device and fill it from its weight
    files: parameters and persistent buffers from disk (this rank's rows only), non-persistent
    buffers (rotary frequencies) recomputed from the config."""
    device = torch.device(mesh.device_type)
    if mesh.device_type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    model.to_empty(device=device)
    read_shards(model, Path(model.config._name_or_path))
    with torch.no_grad():
        for module in model.modules():
            if module._non_persistent_buffers_set:
                model._init_weights(module)


def read_shards(model: torch.nn.Module, directory: Path) -> None:
    """Copy each tensor's local part (all of it when not sharded) from `directory`."""
    from safetensors import safe_open
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    files = weight_files(directory)
    tensors = dict(model.named_parameters())  # a tied weight once, under its first name
    persistent = model.state_dict().keys()
    tensors.update({n: b for n, b in model.named_buffers() if n in persistent})
    missing = [name for name in tensors if name not in files]
    if missing:
        raise ConfigError(
            f"{directory}: the weight files lack {missing[:5]} ({len(missing)} in all)"
        )
    handles: dict[Path, Any] = {}
    with torch.no_grad():
        for name, tensor in tensors.items():
            file = files[name]
            if file not in handles:
                handles[file] = safe_open(file, "pt", device="cpu")
            if isinstance(tensor, DTensor):
                local = tensor.to_local()
                shape, offset = compute_local_shape_and_global_offset(
                    tensor.shape, tensor.device_mesh, tensor.placements
                )
                rows = tuple(slice(o, o + n) for o, n in zip(offset, shape))
                if local.numel():
                    local.copy_(handles[file].get_slice(name)[rows])
            else:
                tensor.copy_(handles[file].get_tensor(name))
