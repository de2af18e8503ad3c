"""Losses as pure functions of logits and labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from citrus.train.data import IGNORE


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
