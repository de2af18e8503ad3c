"""trainer.strategy and trainer.precision -> what Fabric runs: auto (one device), ddp, or fsdp2
(FSDP2 `fully_shard` per decoder layer through Fabric's ModelParallelStrategy; CPU with gloo or
GPUs with nccl), and the dtypes each precision trains in.

    precision    parameters + optimizer state   compute                  gradients (reduced)
    32-true      float32                        float32                  float32
    bf16-mixed   float32 (master weights)       bf16: autocast; FSDP2    float32 (FSDP2: reduced
                                                gathers bf16 copies      in float32)
    bf16-true    bfloat16 (opt-in: an update    bfloat16                 bfloat16
                 below bf16's resolution, e.g.
                 0.02 - 1e-5, is lost)

Whatever the precision, the export is written in model.dtype. Under LoRA with bf16-mixed the
frozen base stays in model.dtype (autocast mixes it in) and only the adapters are float32.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

STRATEGIES = ("auto", "ddp", "fsdp2")
PARAM_DTYPES = {"32-true": "float32", "bf16-mixed": "float32", "bf16-true": "bfloat16"}


def param_dtype(precision: str) -> str:
    """The dtype trainable parameters (and so the optimizer state) are kept in."""
    return PARAM_DTYPES[precision]


def mixed_precision_policy(precision: str) -> Any:
    """FSDP2's casting for bf16-mixed: bf16 all-gathered parameters for compute over float32
    shards, gradients reduced in float32; None (no casting) for the other precisions."""
    if precision != "bf16-mixed":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


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


def fsdp2_parallelize(
    model: torch.nn.Module, device_mesh: Any, mp_policy: Any = None, frozen: bool = False
) -> torch.nn.Module:
    """Shard each decoder layer, then the root (embeddings, final norm, head) - the layout of
    torchtitan and litgpt: one all-gather per layer in forward and backward. A model built on
    the meta device (citrus.train.loading) is then given memory and its weights, each process
    reading only its own shards. A `frozen` model (a reference: no backward) also reshards its
    root after each forward, which FSDP2 otherwise leaves gathered for the backward."""
    from torch.distributed.fsdp import fully_shard

    from citrus.train.loading import is_meta, materialize

    mesh = (
        device_mesh["data_parallel"]
        if device_mesh.mesh_dim_names and "data_parallel" in device_mesh.mesh_dim_names
        else device_mesh
    )
    kwargs = {"mesh": mesh} if mp_policy is None else {"mesh": mesh, "mp_policy": mp_policy}
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs, **({"reshard_after_forward": True} if frozen else {}))
    if is_meta(model):
        materialize(model, mesh)
    return model


def build_strategy(t: Any) -> Any:
    if t.strategy == "fsdp2":
        from lightning.fabric.strategies import ModelParallelStrategy

        return ModelParallelStrategy(
            parallelize_fn=functools.partial(
                fsdp2_parallelize, mp_policy=mixed_precision_policy(t.precision)
            ),
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
