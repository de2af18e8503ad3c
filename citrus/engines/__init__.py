"""Text-generation backends behind one call: `engine.generate(conversations) -> replies`.

Chosen by `engine=`: hf (transformers, here); vllm and openai-compatible HTTP come next.
"""

from __future__ import annotations

from typing import Any

ENGINES = ("hf",)


def build_engine(engine_cfg: Any, model_cfg: Any):
    if engine_cfg.name == "hf":
        from citrus.engines.hf import HFEngine

        return HFEngine(engine_cfg, model_cfg)
    raise ValueError(f"engine.name: unknown {engine_cfg.name!r}; one of {list(ENGINES)}")
