"""Attention for packed rows without a (rows x T x T) mask: each example of a row attends
causally to itself only, found from where its position ids restart. Cost is sum(L_i^2) per row
instead of T^2.

Registered with transformers as attention implementation `citrus_packed`; the trainer switches a
model to it for packed batches, and back before export. (transformers' flash_attention_2 reads
packed position ids only in batches of one row, so it is not relied on.) On CUDA, in bf16/fp16
compute and without attention dropout, it calls PyTorch's varlen FlashAttention kernel over the
whole batch at once; otherwise one causal SDPA call per example. The example bounds are computed
once per forward pass, not once per layer.
"""

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


def cumulative_lengths(position_ids: torch.Tensor) -> torch.Tensor:
    """Start offsets of every example in the flattened batch, then its total length (int32, on
    the ids' device): FlashAttention's cu_seqlens. Rows are examples' boundaries too."""
    rows, width = position_ids.shape
    restart = torch.ones_like(position_ids, dtype=torch.bool)
    restart[:, 1:] = position_ids[:, 1:] <= position_ids[:, :-1]
    starts = restart.reshape(-1).nonzero().squeeze(-1)
    end = torch.tensor([rows * width], device=starts.device)
    return torch.cat([starts, end]).to(torch.int32)


class _Bounds:
    """One forward pass computes example bounds once: every layer gets the same position_ids
    tensor, so the last one seen is remembered (a GPU -> CPU sync per forward, not per layer)."""

    def __init__(self) -> None:
        self.key: torch.Tensor | None = None
        self.value = None

    def __call__(self, position_ids: torch.Tensor, compute):
        if self.key is not position_ids:
            self.key, self.value = position_ids, compute(position_ids)
        return self.value


_segments, _cumulative = _Bounds(), _Bounds()


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
    gqa = query.shape[1] != key.shape[1]
    dropout = dropout if module.training else 0.0
    # FlashAttention takes 16-bit inputs only (float32 master weights under autocast can leave
    # q and k in float32 after the rotary embedding) and has no dropout here
    half = query.dtype in (torch.bfloat16, torch.float16) and key.dtype == query.dtype
    if query.is_cuda and half and value.dtype == query.dtype and dropout == 0.0:
        return _varlen(query, key, value, position_ids, scaling, gqa), None
    rows = []
    for b, spans in enumerate(_segments(position_ids, segments)):
        parts = [
            F.scaled_dot_product_attention(
                query[b : b + 1, :, s:e],
                key[b : b + 1, :, s:e],
                value[b : b + 1, :, s:e],
                is_causal=True,
                scale=scaling,
                dropout_p=dropout,
                enable_gqa=gqa,
            )
            for s, e in spans
        ]
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def _varlen(query, key, value, position_ids, scaling, gqa) -> torch.Tensor:
    """All examples of the batch in one varlen FlashAttention call (CUDA; no dropout)."""
    from torch.nn.attention.varlen import varlen_attn

    rows, heads, width, dim = query.shape
    cu = _cumulative(position_ids, cumulative_lengths)

    def flat(t: torch.Tensor) -> torch.Tensor:  # (B, H, T, D) -> (B*T, H, D)
        return t.transpose(1, 2).reshape(rows * width, t.shape[1], dim)

    out = varlen_attn(
        flat(query), flat(key), flat(value), cu, cu, width, width,
        scale=scaling, window_size=(-1, 0), enable_gqa=gqa,
    )  # fmt: skip
    return out.reshape(rows, width, heads, dim)


AttentionInterface.register(NAME, packed_attention)
