"""Training objectives: one registry, `OBJECTIVES`, keyed by `algorithm.loss`.

An objective says which records it trains on (`data_format`), whether it needs a frozen
reference model, the denominators of a step's loss terms (`counts`), and how it scores one
micro-batch. Every preference loss is a pure function in losses.py plus one line in
`PREFERENCE_LOSSES` saying what it is fed; `conf/algorithm/<name>.yaml` then selects it:

    # losses.py                                   # here
    def my_loss(chosen, rejected, algo): ...      "my_loss": PreferenceLoss(losses.my_loss),
    # conf/algorithm/my_loss.yaml: name: my_loss / loss: my_loss / beta: 0.1
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from citrus.plugins import lookup
from citrus.train import losses
from citrus.train.head import next_token_logps
from citrus.train.losses import IGNORE

# batch -> (rows, T - 1) log-probs of each next token, under a model: the policy, or the frozen
# reference of the losses that have one
Scorer = Callable[[dict], torch.Tensor]
Reduction = Literal["sum", "mean"]  # a reply's log-prob: summed over its tokens, or per token


class Objective(Protocol):
    data_format: str  # the records it trains on: sft | preference | prompt (online, rollout.py)

    def needs_reference(self, algo: Any) -> bool:
        """Whether the trainer builds a frozen reference model for it."""
        ...

    def counts(self, window: list[dict]) -> dict[str, int]:
        """Denominators of the step's loss terms, summed over its micro-batches (and then over
        processes by the trainer), so a loss does not depend on how a step is split."""
        ...

    def __call__(
        self,
        policy: Scorer,
        batch: dict,
        counts: dict[str, int],
        algo: Any,
        reference: Scorer | None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """This micro-batch's share of the step's loss, and its share of the logged metrics."""
        ...


def forward(model: Any, batch: dict, chunk_size: int = 0) -> torch.Tensor:
    """(rows, T - 1) log-probs of each next token under `model`, through the chunked head
    (citrus.train.head; chunk_size 0: one chunk); a batch of sampled completions carries the
    `temperature` they were sampled at, and is scored under that distribution."""
    # use_cache=False matters beyond memory: with a cache, transformers ignores the restarted
    # position ids of packed rows and lets examples attend to each other
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    temperature = batch.get("temperature", 1.0)
    with next_token_logps(model, batch["input_ids"], chunk_size, temperature):
        return model(**inputs, use_cache=False).logits[:, :-1]


def _targets(labels: torch.Tensor) -> int:
    return int((labels[:, 1:] != IGNORE).sum())


class SFT:
    """Next-token NLL on the labelled tokens (the reply, or the whole record)."""

    data_format = "sft"

    def needs_reference(self, algo):
        return False

    def counts(self, window: list[dict]) -> dict[str, int]:
        return {"tokens": sum(_targets(b["labels"]) for b in window)}

    def __call__(self, policy, batch, counts, algo, reference):
        nll, _ = losses.token_nll_sum(policy(batch), batch["labels"])
        return nll / counts["tokens"], {"loss": float(nll.detach()) / counts["tokens"]}


@dataclass(frozen=True)
class PreferenceLoss:
    """A registry entry: a pure per-pair loss (losses.py) and what it is fed."""

    fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
    logps: Reduction = "sum"  # the replies' log-probs the loss sees: summed, or per-token "mean"
    reference: bool = False  # the loss sees log-ratios to a frozen reference: log π - log π_ref
    # behaviour cloning added to the loss: "reply" (cpo_alpha x the chosen reply's NLL),
    # "sequence" (ORPO: the chosen prompt + reply's NLL, weight 1) or None
    nll: Literal["reply", "sequence"] | None = "reply"
    reward_logps: Reduction | None = None  # the logged rewards' when not `logps` (TRL's IPO: sum)


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    # reference-free, + cpo_alpha x chosen NLL: CPO (Xu et al. 2024) and SimPO (Meng et al. 2024)
    "cpo": PreferenceLoss(losses.sigmoid),
    "cpo_hinge": PreferenceLoss(losses.hinge),
    "cpo_ipo": PreferenceLoss(losses.ipo, logps="mean"),
    "simpo": PreferenceLoss(losses.simpo, logps="mean"),  # CPO-SimPO when cpo_alpha > 0
    # against a frozen reference: DPO (Rafailov et al. 2023), SLiC-style hinge, IPO
    "dpo": PreferenceLoss(losses.sigmoid, reference=True, nll=None),
    "dpo_hinge": PreferenceLoss(losses.hinge, reference=True, nll=None),
    "ipo": PreferenceLoss(losses.ipo, logps="mean", reference=True, nll=None, reward_logps="sum"),
    "apo_zero": PreferenceLoss(losses.apo_zero, reference=True, nll=None),
    # ORPO (Hong et al. 2024): odds ratio on averaged log-probs + the whole chosen sequence's NLL
    "orpo": PreferenceLoss(losses.orpo, logps="mean", nll="sequence"),
}


class Preference:
    """A preference loss on batches of [chosen; rejected] rows (row i and row B + i: a pair)."""

    data_format = "preference"

    def __init__(self, loss: PreferenceLoss):
        self.loss = loss

    def needs_reference(self, algo):
        return self.loss.reference

    def counts(self, window: list[dict]) -> dict[str, int]:
        pairs = [b["input_ids"].shape[0] // 2 for b in window]
        sequence = [int(b["attention_mask"][:n, 1:].sum()) for b, n in zip(window, pairs)]
        return {
            "pairs": sum(pairs),
            "chosen_tokens": sum(_targets(b["labels"][:n]) for b, n in zip(window, pairs)),
            "chosen_sequence_tokens": sum(sequence),  # orpo's NLL covers the prompt too
        }

    def __call__(self, policy, batch, counts, algo, reference):
        n = batch["input_ids"].shape[0] // 2
        logps = policy(batch)
        sums, lengths = losses.sequence_logps(logps, batch["labels"])
        ref_sums = None
        if self.loss.reference:
            with torch.no_grad():
                ref_sums, _ = losses.sequence_logps(reference(batch), batch["labels"])

        def scored(how: str) -> torch.Tensor:  # per-row log-probs (minus the reference's)
            logps = sums if ref_sums is None else sums - ref_sums
            return logps / lengths.clamp(min=1) if how == "mean" else logps

        fed = scored(self.loss.logps)
        loss = self.loss.fn(fed[:n], fed[n:], algo).sum() / counts["pairs"]
        nll, nll_tokens = self.chosen_nll(logps, batch, sums, n, counts)
        if self.loss.nll == "reply":
            loss = loss + algo.cpo_alpha * nll / nll_tokens
        elif self.loss.nll == "sequence":
            loss = loss + nll / nll_tokens
        rewards = algo.beta * scored(self.loss.reward_logps or self.loss.logps).detach()
        chosen, rejected = rewards[:n], rewards[n:]
        share = n / counts["pairs"]  # this micro-batch's part of the step's per-pair means
        return loss, {
            "loss": float(loss.detach()),
            "nll": float(nll.detach()) / nll_tokens,
            "rewards/chosen": float(chosen.mean()) * share,
            "rewards/rejected": float(rejected.mean()) * share,
            "rewards/margins": float((chosen - rejected).mean()) * share,
            "rewards/accuracies": float((chosen > rejected).float().mean()) * share,
            "logps/chosen": float(sums[:n].detach().mean()) * share,
            "logps/rejected": float(sums[n:].detach().mean()) * share,
        }

    def chosen_nll(self, logps, batch, sums, n, counts) -> tuple[torch.Tensor, int]:
        """Summed NLL of the chosen rows and its denominator over the step: the reply's tokens,
        or (ORPO, as its reference code and TRL) the whole sequence's."""
        if self.loss.nll != "sequence":
            return -sums[:n].sum(), counts["chosen_tokens"]
        whole = batch["input_ids"][:n].masked_fill(batch["attention_mask"][:n] == 0, IGNORE)
        return losses.token_nll_sum(logps[:n], whole)[0], counts["chosen_sequence_tokens"]


class GRPO:
    """GRPO (Shao et al. 2024) on a step's rollouts (citrus.train.rollout): rows are sampled
    completions after their prompts, labels mark the completion tokens, `advantages` one per row.
    The clipped ratio to the policy that sampled them (`old_logps`; with num_iterations 1 that
    policy is the current one, and the ratio is 1 in value but not in gradient), plus beta x the
    k3 KL to a frozen reference (times the ratio with kl_ratio_correction); normalized as
    algo.loss_type says. TRL GRPOTrainer's loss."""

    data_format = "prompt"

    def needs_reference(self, algo):
        return algo.beta != 0.0

    def counts(self, window: list[dict]) -> dict[str, int]:
        # every sampled completion, including those the rollout did not run (zero advantage)
        return {
            "sequences": sum(b["sequences"] for b in window),
            "tokens": sum(b["completion_tokens"] for b in window),
        }

    def __call__(self, policy, batch, counts, algo, reference):
        logps = policy(batch)
        mask = (batch["labels"][:, 1:] != IGNORE).to(logps.dtype)
        old = batch.get("old_logps")
        old = logps.detach() if old is None else old
        eps_high = algo.epsilon if algo.epsilon_high is None else algo.epsilon_high
        per_token, clipped = losses.clipped_surrogate(
            logps, old, batch["advantages"], algo.epsilon, eps_high
        )
        kl = None
        if algo.beta != 0.0:
            with torch.no_grad():
                ref_logps = reference(batch)
            kl = losses.k3_kl(logps, ref_logps)
            weight = torch.exp(logps - old) if algo.kl_ratio_correction else 1.0
            per_token = per_token + algo.beta * kl * weight
        masked = per_token * mask
        if algo.loss_type == "grpo":  # each sequence's token mean, averaged over sequences
            loss = (masked.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / counts["sequences"]
        elif algo.loss_type == "dapo":  # every token of the step alike
            loss = masked.sum() / max(1, counts["tokens"])
        elif algo.loss_type == "dr_grpo":  # a constant denominator: no length bias
            loss = masked.sum() / (counts["sequences"] * algo.max_new_tokens)
        else:
            raise ValueError(f"algorithm.loss_type={algo.loss_type!r}: grpo, dapo or dr_grpo")
        tokens = max(1, counts["tokens"])
        metrics = {
            "loss": float(loss.detach()),
            "clip_ratio": float((clipped * mask).sum()) / tokens,
            # log π_old - log π: how far the updates moved the policy off its samples
            "policy_drift": float(((old - logps.detach()) * mask).sum()) / tokens,
        }
        if kl is not None:
            metrics["kl"] = float((kl.detach() * mask).sum()) / tokens
        return loss, metrics


OBJECTIVES: dict[str, Objective] = {
    "sft": SFT(),
    **{name: Preference(loss) for name, loss in PREFERENCE_LOSSES.items()},
    "grpo": GRPO(),
}


def objective_of(algo: Any) -> Objective:
    """algorithm.loss's objective: a key of OBJECTIVES, or your own's import path."""
    return lookup(OBJECTIVES, algo.loss, "algorithm.loss")
