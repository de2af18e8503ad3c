"""Losses as pure functions: token NLL for SFT, and preference losses over per-sequence
log-probabilities (each returns one loss per pair; the caller averages)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from citrus.train.data import IGNORE

PAIR_LOSS_TYPES = {
    "cpo": ("sigmoid", "hinge", "ipo", "simpo"),
    "dpo": ("sigmoid", "hinge", "ipo"),
    "orpo": ("sigmoid",),
}


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood and the number of target tokens.

    Causal LM cross-entropy: sum_t -log p(y_t | y_<t) over labelled positions. Returning the sum
    lets gradient accumulation divide by the tokens of the whole accumulated batch, so the loss
    does not depend on how the batch was split into micro-batches."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return nll, (shift_labels != IGNORE).sum()


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: log p(completion | prompt) = sum_t log p(y_t | y_<t) over labelled
    positions, and the number of those positions (divide for the length-normalized average)."""
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE
    logps = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
    token_logps = logps.gather(-1, shift_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def _sigmoid_pair(margin: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """-log σ(margin), with conservative label smoothing ε (cDPO): -(1-ε) log σ(m) - ε log σ(-m)."""
    return -F.logsigmoid(margin) * (1 - label_smoothing) - F.logsigmoid(-margin) * label_smoothing


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7): -log σ(β[(log π(y_c) - log π_ref(y_c)) - (log π(y_r) - log π_ref(y_r))])
    over summed log-probs; hinge is SLiC's (Zhao et al. 2023); ipo is IPO's eq. 17 (Azar et al.
    2023) on per-token log-ratios, which needs the completion token counts."""
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    if loss_type == "sigmoid":
        return _sigmoid_pair(beta * (chosen_ratio - rejected_ratio), label_smoothing)
    if loss_type == "hinge":
        return torch.relu(1 - beta * (chosen_ratio - rejected_ratio))
    if loss_type == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError(
                "dpo ipo loss: pass chosen_tokens and rejected_tokens (it averages log-ratios per token)"
            )
        delta = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(
            min=1
        )
        return (delta - 1 / (2 * beta)) ** 2
    raise ValueError(f"dpo loss_type {loss_type!r}; one of {list(PAIR_LOSS_TYPES['dpo'])}")


def cpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.0,
) -> torch.Tensor:
    """CPO (Xu et al. 2024, eq. 3), the reference-free preference term: -log σ(β(log π(y_c) - log π(y_r))).
    hinge: SLiC; ipo: (Δ - 1/2β)²; simpo: SimPO's target margin (Meng et al. 2024, eq. 6),
    -log σ(βΔ - γ), on length-averaged log-probs (CPO-SimPO, the Citrus setting). The caller
    passes summed log-probs for sigmoid/hinge and averaged ones for ipo/simpo, and adds
    cpo_alpha x the chosen NLL (the behaviour-cloning term of eq. 3)."""
    delta = chosen - rejected
    if loss_type in ("sigmoid", "simpo"):
        gamma = simpo_gamma if loss_type == "simpo" else 0.0
        return _sigmoid_pair(beta * delta - gamma, label_smoothing)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta)
    if loss_type == "ipo":
        return (delta - 1 / (2 * beta)) ** 2
    raise ValueError(f"cpo loss_type {loss_type!r}; one of {list(PAIR_LOSS_TYPES['cpo'])}")


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Maechler 2012)."""
    return torch.where(
        x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x))
    )


def orpo_loss(
    chosen_avg: torch.Tensor, rejected_avg: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """ORPO's odds-ratio term (Hong et al. 2024, eqs. 4 and 7), to be added to the chosen NLL:
    -β log σ(log odds(y_c) - log odds(y_r)), odds(y) = p / (1 - p) on length-averaged log-probs.
    Returns the per-pair loss and the log odds ratio (logged)."""
    chosen_avg, rejected_avg = chosen_avg.float(), rejected_avg.float()
    log_odds = (chosen_avg - rejected_avg) - (log1mexp(chosen_avg) - log1mexp(rejected_avg))
    return -beta * F.logsigmoid(log_odds), log_odds
