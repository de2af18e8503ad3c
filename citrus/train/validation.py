"""Evaluation during training, as litgpt's and TRL's users expect: the objective's loss (and, for
preference objectives, its reward metrics) on held-out records, and optionally the accuracy of
the `benchmark` group asked in likelihood mode, both with the model being trained.

Every process takes its share of the validation batches and the sums are all-reduced, so the
loss is the one a single process would compute; processes left with fewer batches run a copy
of one whose result they drop, because FSDP2's forward is a collective every rank must join.
Packed training swaps the attention for one that reads packing boundaries; validation batches
are padded rows, so the backbone's own attention serves them.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from typing import Any

import torch

from citrus.train.objectives import forward
from citrus.train.strategy import all_sum


def validate(training: Any) -> dict[str, float]:
    """The validation metrics of the model as it is now: loss (sums over every held-out record)
    and `<task>/accuracy` per benchmark task with trainer.val_benchmark."""
    out: dict[str, float] = {}
    with evaluating(training):
        if training.val_examples:
            out.update(validation_loss(training))
        if training.cfg.trainer.val_benchmark:
            out.update(benchmark_accuracy(training))
    return out


@contextmanager
def evaluating(training: Any):
    """No dropout, no gradients, the backbone's own attention; training mode back after."""
    base, packed = training.base, training.base.config._attn_implementation
    base.config._attn_implementation = training.attention
    training.model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        base.config._attn_implementation = packed
        training.model.train()


def validation_loss(training: Any) -> dict[str, float]:
    fabric, t, objective = training.fabric, training.cfg.trainer, training.objective
    examples, size = training.val_examples, t.micro_batch_size
    batches = [examples[i : i + size] for i in range(0, len(examples), size)]
    rounds = math.ceil(len(batches) / fabric.world_size)
    mine = batches[fabric.global_rank :: fabric.world_size]
    window = [fabric.to_device(training.val_collate(b)) for b in mine]
    counts = objective.counts(window)
    if fabric.world_size > 1:
        counts = {k: int(v) for k, v in all_sum(fabric, counts).items()}
    policy = functools.partial(forward, training.model, chunk_size=t.loss_chunk_size)
    sums: dict[str, float] = {}
    for i in range(rounds):
        batch = window[i] if i < len(window) else fabric.to_device(training.val_collate(batches[0]))
        _, metrics = objective(policy, batch, counts, training.cfg.algorithm, training.reference)
        if i < len(window):
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
    if fabric.world_size > 1:
        sums = all_sum(fabric, {k: sums.get(k, 0.0) for k in sorted(metrics)})
    return sums


def benchmark_accuracy(training: Any) -> dict[str, float]:
    """Accuracy on each task of cfg.benchmark (its limit applies), scoring the options after the
    question in likelihood mode, with the in-training model. Every process scores every question,
    so FSDP2's collectives stay in step; rank 0 logs."""
    from citrus.data.benchmarks import load_task
    from citrus.engines.hf import HFEngine
    from citrus.evaluate.evaluator import continuations_of, protocol, with_variant
    from citrus.evaluate.metrics import accuracy
    from citrus.prompts import build_text

    cfg = training.cfg
    engine = HFEngine.around(cfg.engine, training.model, training.tokenizer, training.fabric.device)
    out = {}
    for name, task in cfg.benchmark.tasks.items():
        task = with_variant(task, cfg.benchmark)
        how = protocol(task, cfg.benchmark)
        prompt = how["prompt"] if how["mode"] == "likelihood" else "mc_likelihood"
        items = load_task(name, task, cfg.benchmark, cfg.paths.data_dir).items
        scores = engine.loglikelihoods(
            [build_text(q, prompt) for q in items],
            [continuations_of(q, how.get("continuation", "letter")) for q in items],
        )
        best = [list(q.options)[s.index(max(s))] for q, s in zip(items, scores)]
        out[f"{name}/accuracy"] = accuracy(best, [q.answer for q in items])
    return out
