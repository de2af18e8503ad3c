"""trainer.strategy -> a Fabric strategy: auto (one device), ddp, or fsdp2 (FSDP2 `fully_shard`
per decoder layer through Fabric's ModelParallelStrategy; CPU with gloo or GPUs with nccl)."""

from __future__ import annotations

from typing import Any

import torch

STRATEGIES = ("auto", "ddp", "fsdp2")


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a causal LM (also under a peft wrapper): the units FSDP2 shards."""
    for module in model.modules():
        layers = getattr(module, "layers", None)
        if (
            isinstance(layers, torch.nn.ModuleList)
            and len(layers)
            and hasattr(module, "embed_tokens")
        ):
            return list(layers)
    raise ValueError(
        f"{type(model).__name__}: no decoder layers "
        "(a .layers ModuleList next to .embed_tokens) to shard"
    )


def fsdp2_parallelize(model: torch.nn.Module, device_mesh: Any) -> torch.nn.Module:
    """Shard each decoder layer, then the root (embeddings, final norm, head) - the layout of
    torchtitan and litgpt: one all-gather per layer in forward and backward."""
    from torch.distributed.fsdp import fully_shard

    mesh = (
        device_mesh["data_parallel"]
        if device_mesh.mesh_dim_names and "data_parallel" in device_mesh.mesh_dim_names
        else device_mesh
    )
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def build_strategy(t: Any) -> Any:
    if t.strategy == "fsdp2":
        from lightning.fabric.strategies import ModelParallelStrategy

        return ModelParallelStrategy(
            parallelize_fn=fsdp2_parallelize,
            data_parallel_size=t.devices * t.num_nodes,
            tensor_parallel_size=1,
        )
    return t.strategy


def all_sum(fabric: Any, values: dict[str, float]) -> dict[str, float]:
    """Sum a dict of numbers over every process."""
    tensors = {
        k: torch.tensor(float(v), dtype=torch.float64, device=fabric.device)
        for k, v in values.items()
    }
    return {k: float(v) for k, v in fabric.all_reduce(tensors, reduce_op="sum").items()}
