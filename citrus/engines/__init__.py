"""Text-generation backends behind one call: `engine.generate(conversations) -> replies`.

Chosen by `engine=`: hf (transformers), vllm (offline vllm.LLM), openai (any OpenAI-compatible
HTTP server). Likelihood scoring needs the model's logits, so only `hf` offers it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

        return OpenAIEngine(engine_cfg, model_cfg, Path(engine_cfg.cache_path) if engine_cfg.cache_path else None)
    raise ValueError(f"engine.name: unknown {engine_cfg.name!r}; one of {list(ENGINES)}")
