"""Attention for packed rows without a (rows x T x T) mask: each example of a row attends
causally to itself only, found from where its position ids restart - the varlen idea of
FlashAttention-2, in plain PyTorch so it runs on CPU too. Cost is sum(L_i^2) per row instead of
T^2, and every call uses the fast causal kernel.

Registered with transformers as attention implementation `citrus_packed`; the trainer switches a
model to it only for packed batches, and back to `sdpa` before export."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

NAME = "citrus_packed"


def segments(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each example: a new one starts wherever positions restart."""
    bounds = []
    for row in position_ids.tolist():
        starts = [i for i, p in enumerate(row) if i == 0 or p <= row[i - 1]]
        bounds.append(list(zip(starts, [*starts[1:], len(row)])))
    return bounds


def packed_attention(
    module,
    query,
    key,
    value,
    attention_mask,
    dropout=0.0,
    scaling=None,
    position_ids=None,
    **kwargs,
):
    """query (B, H, T, D), key/value (B, H_kv, T, D) -> (B, T, H, D), as transformers expects."""
    if position_ids is None:
        raise ValueError(
            f"attention {NAME!r} needs position_ids that restart at each packed example"
        )
    rows = []
    for b, spans in enumerate(segments(position_ids)):
        parts = [
            F.scaled_dot_product_attention(
                query[b : b + 1, :, s:e],
                key[b : b + 1, :, s:e],
                value[b : b + 1, :, s:e],
                is_causal=True,
                scale=scaling,
                dropout_p=dropout if module.training else 0.0,
                enable_gqa=query.shape[1] != key.shape[1],
            )
            for s, e in spans
        ]
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, packed_attention)
