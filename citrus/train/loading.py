"""Loading a backbone for sharded training without a full copy per process.

`from_pretrained` on every rank costs 8 local ranks x 140 GB of host memory per node for a 70B
model. Under FSDP2 the backbone is instead built on the meta device (shapes, no memory), sharded,
then given memory and filled: each process reads only its own rows of each tensor from the
safetensors files (plain reads of those bytes, one tensor at a time), so a node's host memory
holds at most one tensor's slice per process, and every rank reads in parallel.
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
    if (Path(directory) / "generation_config.json").is_file():  # kept in the export
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(directory)
    return model


def local_directory(path: str) -> str:
    """A hub id's files in the local cache (downloaded once: weights, config, tokenizer)."""
    if is_local(path):
        return path
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.jinja"]
    return snapshot_download(path, allow_patterns=patterns)


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
    reader = SafetensorsFile(single)
    reader.close()  # the header is all this needs
    return dict.fromkeys(reader.entries, single)


# the safetensors format: 8 bytes of header length, a JSON header {name: {dtype, shape,
# data_offsets}}, then the tensors' bytes, row-major
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


class SafetensorsFile:
    """Reads row ranges of a tensor with plain file reads: only the bytes asked for are read, and
    none are mapped into the process (a memory map's touched pages would count as its own)."""

    def __init__(self, path: Path):
        self.file = path.open("rb")
        size = int.from_bytes(self.file.read(8), "little")
        self.entries = {
            k: v for k, v in json.loads(self.file.read(size)).items() if k != "__metadata__"
        }
        self.data_start = 8 + size

    def read(self, name: str, rows: slice) -> torch.Tensor:
        """Rows `rows` (of the first dimension) of tensor `name`."""
        entry = self.entries[name]
        shape, dtype = entry["shape"], SAFETENSORS_DTYPES[entry["dtype"]]
        if not shape:  # a scalar
            shape, rows = [1], slice(0, 1)
        start, stop, _ = rows.indices(shape[0])
        out = torch.empty((stop - start, *shape[1:]), dtype=dtype)
        row_bytes = out[0].numel() * out.element_size() if len(out) else 0
        self.file.seek(self.data_start + entry["data_offsets"][0] + start * row_bytes)
        self.file.readinto(memoryview(out.view(torch.uint8).numpy()).cast("B"))
        return out.reshape(entry["shape"]) if not entry["shape"] else out

    def close(self) -> None:
        self.file.close()


def materialize(model: torch.nn.Module, mesh: Any) -> None:
    """Give a sharded meta model memory on this process's device and fill it from its weight
    files: parameters and persistent buffers from disk (this rank's part only), non-persistent
    buffers (rotary frequencies) recomputed from the config."""
    device = torch.device(mesh.device_type)
    if mesh.device_type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    model.to_empty(device=device)
    read_shards(model, Path(model.config._name_or_path))
    with torch.no_grad():
        for module in model.modules():
            if module._non_persistent_buffers_set:
                # transformers' own init computes the buffers; it would also re-draw the
                # module's parameters (a scaled embedding's), which were just loaded: keep them
                kept = {n: p.detach().clone() for n, p in module.named_parameters(recurse=False)}
                model._init_weights(module)
                for name, value in kept.items():
                    getattr(module, name).detach().copy_(value)


def read_shards(model: torch.nn.Module, directory: Path) -> None:
    """Copy each tensor's local part (all of it when not sharded) from `directory`, one tensor
    at a time."""
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
    readers = {path: SafetensorsFile(path) for path in set(files.values())}
    try:
        with torch.no_grad():
            for name, tensor in tensors.items():
                reader = readers[files[name]]
                if not isinstance(tensor, DTensor):
                    tensor.copy_(reader.read(name, slice(None)))
                    continue
                local = tensor.to_local()
                shape, offset = compute_local_shape_and_global_offset(
                    tensor.shape, tensor.device_mesh, tensor.placements
                )
                if local.numel():
                    part = reader.read(name, slice(offset[0], offset[0] + shape[0]))
                    rest = tuple(slice(o, o + n) for o, n in zip(offset[1:], shape[1:]))
                    local.copy_(part[(slice(None), *rest)])
    finally:
        for reader in readers.values():
            reader.close()
