"""The output head, chunked: per-token log-probabilities of the next tokens without ever holding
(tokens x vocab) float32 logits. For 8192 tokens over a 128k vocabulary the float32 logits
alone take 4.2 GB, 10.5 GB with the bf16 logits and the log-softmax beside them; here one chunk
of `chunk_size` tokens is live at a time, and backward recomputes each chunk's logits instead
of keeping them (the chunked cross-entropy of litgpt and torchtune, Liger's fused linear
cross-entropy without the kernel).

It runs inside the model's own forward (the head's forward is swapped for one call), so DDP's
and FSDP2's hooks see the head's weight used where they expect it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from citrus.errors import ConfigError
from citrus.train.export import unwrapped

# config keys of architectures that transform logits after the head (Gemma 2, Granite, Cohere)
LOGIT_CHANGES = ("final_logit_softcapping", "logits_scaling", "logit_scale")


def _chunk_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log softmax((h W^T + b) / T)[target] = logit[target] - logsumexp(logits), in float32 at
    least; T the sampling temperature of the scored tokens (1: the model's own distribution)."""
    logits = F.linear(hidden, weight, bias)
    logits = logits if logits.dtype == torch.float64 else logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _head_forward(
    head: torch.nn.Linear,
    targets: torch.Tensor,
    chunk_size: int,
    temperature: float,
    hidden: torch.Tensor,
) -> torch.Tensor:
    """(rows, T, hidden) -> (rows, T): log p(targets[:, t]) from position t's hidden state."""
    rows, width, _ = hidden.shape
    flat, flat_targets = hidden.reshape(rows * width, -1), targets.reshape(-1)
    step = chunk_size if chunk_size > 0 else flat.shape[0]
    recompute = chunk_size > 0 and torch.is_grad_enabled()
    parts = []
    for s in range(0, flat.shape[0], step):
        args = (flat[s : s + step], head.weight, head.bias, flat_targets[s : s + step],
                temperature)  # fmt: skip
        parts.append(checkpoint(_chunk_logps, *args, use_reentrant=False) if recompute
                     else _chunk_logps(*args))  # fmt: skip
    # a copy, not a view: FSDP2 hooks the model's outputs for backward, and views defeat that
    return torch.cat(parts).reshape(rows, width).clone()


@contextmanager
def next_token_logps(
    model: torch.nn.Module, input_ids: torch.Tensor, chunk_size: int, temperature: float = 1.0
) -> Iterator:
    """For the forward passes inside: the model's `.logits` are (rows, T) log-probabilities of
    each next token (the last position, which has none, scores token 0 and is dropped by the
    caller) instead of (rows, T, vocab) logits."""
    inner = unwrapped(model)
    head = inner.get_output_embeddings()
    changed = [k for k in LOGIT_CHANGES if getattr(inner.config, k, None) not in (None, 1, 1.0)]
    if changed:
        raise ConfigError(
            f"{type(inner).__name__} changes its logits after the output head ({changed[0]}): "
            "not supported by citrus training"
        )
    if not isinstance(head, torch.nn.Linear) or hasattr(head, "base_layer"):
        raise ConfigError(
            f"the output head is a {type(head).__name__}, not a plain Linear: keep lm_head out "
            "of adapter.target_modules"
        )
    targets = F.pad(input_ids[:, 1:], (0, 1))
    head.forward = functools.partial(_head_forward, head, targets, chunk_size, temperature)
    try:
        yield
    finally:
        del head.forward
