"""Text-generation backends behind one call: `engine.generate(conversations) -> replies`.

Chosen by `engine=`: hf (transformers), vllm (offline vllm.LLM), openai (any OpenAI-compatible
HTTP server). Likelihood scoring needs the model's logits, so only `hf` offers it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ENGINES = ("hf", "vllm", "openai")


def build_engine(engine_cfg: Any, model_cfg: Any):
    if engine_cfg.name == "hf":
        from citrus.engines.hf import HFEngine

        return HFEngine(engine_cfg, model_cfg)
    if engine_cfg.name == "vllm":
        from citrus.engines.vllm import VLLMEngine

        return VLLMEngine(engine_cfg, model_cfg)
    if engine_cfg.name == "openai":
        from citrus.engines.openai import OpenAIEngine

        return OpenAIEngine(
            engine_cfg, model_cfg, Path(engine_cfg.cache_path) if engine_cfg.cache_path else None
        )
    raise ValueError(f"engine.name: unknown {engine_cfg.name!r}; one of {list(ENGINES)}")


def build_role_engine(role: Any, job_engine: Any = None):
    """The engine an LLM role (conf/role/) speaks through, with the role's sampling settings.

    role.engine null: the job's already-loaded engine, shallow-copied with those settings, so a
    role played by the evaluated model costs no second copy of its weights (engines read their
    settings from `.cfg` at every call)."""
    settings = {
        "max_new_tokens": role.max_new_tokens,
        "temperature": role.temperature,
        "num_samples": 1,
    }
    if role.engine is None:
        if job_engine is None:
            raise ValueError(
                f"role {role.name!r} uses the job's engine, but this job has none; pick a role with its own engine"
            )
        engine = copy.copy(job_engine)
        engine.cfg = OmegaConf.merge(job_engine.cfg, settings)
        engine.stats = dict.fromkeys(job_engine.stats, 0)  # tokens counted per role
        return engine
    if role.model is None:
        raise ValueError(f"role {role.name!r}: an engine needs a model (roles.<role>.model)")
    return build_engine(OmegaConf.merge(role.engine, settings), role.model)
