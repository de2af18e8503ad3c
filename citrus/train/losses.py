"""Losses as pure functions of log-probabilities.

`token_nll_sum` and `sequence_logps` turn per-token log-probs (`next_token_logps`, or the
chunked head) into what the losses take. The preference
losses share one signature, `(chosen, rejected, algo) -> loss per pair`: `chosen` and
`rejected` are per-pair log-probabilities of the two replies (summed or averaged over their
tokens, and minus a reference model's for the losses that have one, as citrus.train.objectives
registers them); `algo` holds the hyper-parameters (beta, simpo_gamma, label_smoothing).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

IGNORE = -100  # the label value cross-entropy skips (PyTorch's ignore_index)


def next_token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(x_{t+1} | x_<=t) at each position from full (rows, T, vocab) logits: (rows, T - 1).
    What the chunked head (citrus.train.head) computes without materializing the logits."""
    logps = torch.log_softmax(upcast(logits[:, :-1, :]), dim=-1)
    return logps.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def token_nll_sum(logps: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood and the number of target tokens.

    Causal LM cross-entropy: sum_t -log p(y_t | y_<t) over labelled positions (labels copy the
    input ids there; `logps` are next_token_logps). Returning the sum lets gradient
    accumulation divide by the tokens of the whole accumulated batch, so the loss does not
    depend on how the batch was split into micro-batches."""
    mask = labels[:, 1:] != IGNORE
    return -logps.masked_fill(~mask, 0).sum(), mask.sum()


def sequence_logps(logps: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: log p(completion | prompt) = sum_t log p(y_t | y_<t) over labelled
    positions, and the number of those positions (divide for the length-normalized average)."""
    mask = labels[:, 1:] != IGNORE
    return logps.masked_fill(~mask, 0).sum(-1), mask.sum(-1)


def upcast(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16/fp16 logits lose too much in a log-softmax); float64 stays."""
    return t if t.dtype == torch.float64 else t.float()


def _sigmoid_pair(margin: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """-log σ(m), with conservative label smoothing ε (cDPO): -(1-ε) log σ(m) - ε log σ(-m)."""
    return -F.logsigmoid(margin) * (1 - label_smoothing) - F.logsigmoid(-margin) * label_smoothing


def sigmoid(chosen: torch.Tensor, rejected: torch.Tensor, algo: Any) -> torch.Tensor:
    """-log σ(β(c - r)): CPO's preference term (Xu et al. 2024, eq. 3) on log-probs, DPO's
    (Rafailov et al. 2023, eq. 7) on log-ratios to the reference."""
    return _sigmoid_pair(algo.beta * (chosen - rejected), algo.label_smoothing)


def hinge(chosen: torch.Tensor, rejected: torch.Tensor, algo: Any) -> torch.Tensor:
    """SLiC's hinge (Zhao et al. 2023): max(0, 1 - β(c - r))."""
    return torch.relu(1 - algo.beta * (chosen - rejected))


def ipo(chosen: torch.Tensor, rejected: torch.Tensor, algo: Any) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17): (c - r - 1/2β)², on per-token averages."""
    return (chosen - rejected - 1 / (2 * algo.beta)) ** 2


def simpo(chosen: torch.Tensor, rejected: torch.Tensor, algo: Any) -> torch.Tensor:
    """SimPO (Meng et al. 2024, eq. 6): -log σ(β(c - r) - γ) on length-averaged log-probs."""
    return _sigmoid_pair(algo.beta * (chosen - rejected) - algo.simpo_gamma, algo.label_smoothing)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Maechler 2012)."""
    return torch.where(
        x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x))
    )


def orpo(chosen: torch.Tensor, rejected: torch.Tensor, algo: Any) -> torch.Tensor:
    """ORPO's odds-ratio term (Hong et al. 2024, eqs. 4 and 7), added to the chosen NLL:
    -β log σ(log odds(y_c) - log odds(y_r)), odds(y) = p / (1 - p), on averaged log-probs."""
    chosen, rejected = upcast(chosen), upcast(rejected)
    log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
    return -algo.beta * F.logsigmoid(log_odds)


def apo_zero(chosen: torch.Tensor, rejected: torch.Tensor, algo: Any) -> torch.Tensor:
    """APO-zero (D'Oosterlinck et al. 2024, eq. 7): 1 - σ(β c) + σ(β r) on log-ratios to the
    reference: raises the chosen reply's likelihood and lowers the rejected one's, each on its
    own (for chosen replies better than what the model writes now)."""
    return 1 - torch.sigmoid(algo.beta * chosen) + torch.sigmoid(algo.beta * rejected)


def group_advantages(rewards: torch.Tensor, group: int, scale: str = "group") -> torch.Tensor:
    """GRPO's advantages (Shao et al. 2024, eq. 3 of DeepSeekMath): each reward minus its group's
    mean, divided by the group's std (scale "group"), the whole batch's ("batch": this
    process's step) or not at all ("none", Dr. GRPO); + 1e-4 against a zero std, as TRL. Rows of
    a group are consecutive; the std is the unbiased one, as torch.std (and TRL)."""
    grouped = rewards.view(-1, group)
    alike = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)
    # a group that scored alike has no signal: exactly 0, not the mean's rounding error
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).masked_fill(alike, 0.0).view(-1)
    if scale == "none":
        return centred
    if scale == "group":
        std = grouped.std(dim=1).repeat_interleave(group)
    elif scale == "batch":
        std = rewards.std().expand_as(rewards)
    else:
        raise ValueError(f"scale_rewards={scale!r}: one of group, batch, none")
    return centred / (std + 1e-4)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token KL(π || π_ref) by Schulman's k3 estimator (2020): exp(r) - r - 1, r = log π_ref -
    log π; unbiased, and never negative."""
    r = ref_logps - logps
    return torch.exp(r) - r - 1


def clipped_surrogate(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped objective per token (Schulman et al. 2017, eq. 7), as a loss:
    -min(ρ A, clip(ρ, 1 - ε_low, 1 + ε_high) A), ρ = π / π_old; and where the clip decided (the
    ratio outside its range on the side the advantage pushes)."""
    ratio = torch.exp(logps - old_logps)
    a = advantages.unsqueeze(-1)
    loss = -torch.min(ratio * a, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * a)
    clipped = ((ratio < 1 - eps_low) & (a < 0)) | ((ratio > 1 + eps_high) & (a > 0))
    return loss, clipped
