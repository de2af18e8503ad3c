"""Backbones: load any model config (hub id, local dir, exported run) as tokenizer + model."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from citrus.errors import ConfigError, MissingFileError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_path(model_cfg: Any) -> str:
    """The directory or hub id to load.

    A run directory stands for the model it exported (`<run_dir>/model`); a configured tiny
    backbone is built (a packaged GGUF converted) into `path` the first time it is needed."""
    path = Path(model_cfg.path)
    if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        return str(path / "model")
    if model_cfg.build is not None and not (path / "config.json").is_file():
        from citrus.models.tiny import build_backbone

        log.info("building %s from config into %s", model_cfg.name, path)
        return str(build_backbone(path, model_cfg.family, model_cfg.build))
    if model_cfg.build is not None:
        from citrus.models.tiny import check_build

        check_build(path, model_cfg.family, model_cfg.build)
    elif model_cfg.gguf is not None:
        from citrus.models import packaged

        if not (path / "config.json").is_file():
            return str(packaged.convert(path, model_cfg.gguf))
        packaged.check_converted(path, model_cfg.gguf)
    elif is_local(str(model_cfg.path)) and not (path / "config.json").is_file():
        raise MissingFileError(
            f"model.path={model_cfg.path}: no model there (no config.json, nor a run's model/) "
            f"for model={model_cfg.name}; a hub id looks like org/name"
        )
    return str(model_cfg.path)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
SAMPLES_PER_FILE = 16  # 64 KiB reads spread over each weight file: seconds even at 70B


def weights_fingerprint(path: str) -> str:
    """A short id of the weights at `path` (a model directory or a run directory): two models
    differ in it whenever their weights differ, without reading 140 GB. It hashes config.json,
    each weight file's name and size and 16 strided 64 KiB reads of it (a fine-tune changes
    every matrix, so every read). A hub id or a name no directory holds stands for itself."""
    root = Path(path).expanduser()
    if not (root / "config.json").is_file() and (root / "model" / "config.json").is_file():
        root = root / "model"
    if not root.is_dir():
        return str(path)
    digest = hashlib.sha256()
    for file in sorted(root.iterdir()):
        if file.name == "config.json" or file.suffix in WEIGHT_SUFFIXES:
            size = file.stat().st_size
            digest.update(f"{file.name}:{size}".encode())
            with open(file, "rb") as f:
                for i in range(SAMPLES_PER_FILE):
                    f.seek(size * i // SAMPLES_PER_FILE)
                    digest.update(f.read(1 << 16))
    return digest.hexdigest()[:16]


def is_local(path: str) -> bool:
    """A filesystem path rather than a hub id (org/name): absolute, relative-dotted, ~, or
    deeper."""
    return path.startswith(("/", ".", "~")) or path.count("/") > 1 or Path(path).exists()


def load_tokenizer(model_cfg: Any, padding_side: str = "right"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        resolve_path(model_cfg), trust_remote_code=model_cfg.trust_remote_code
    )
    if model_cfg.chat_template:
        tok.chat_template = model_cfg.chat_template
    if not tok.chat_template:
        raise ConfigError(
            f"tokenizer of model {model_cfg.name!r} ({model_cfg.path}) has no chat template; "
            "set model.chat_template"
        )
    if tok.pad_token is None:
        # A hub tokenizer without pad: reuse eos for padding only. Labels are built from
        # lengths, never from pad ids, so the trained stop token is never masked (pad == eos trap).
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_model(model_cfg: Any, dtype: str | None = None):
    from transformers import AutoModelForCausalLM

    name = dtype or model_cfg.dtype
    if name not in DTYPES:
        raise ConfigError(f"model.dtype: unknown {name!r}; one of {sorted(DTYPES)}")
    return AutoModelForCausalLM.from_pretrained(
        resolve_path(model_cfg),
        dtype=DTYPES[name],
        trust_remote_code=model_cfg.trust_remote_code,
        attn_implementation=model_cfg.attn_implementation,
    )
