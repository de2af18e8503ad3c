"""Batches (padded SFT batches, packed SFT rows, chosen/rejected pairs), the training data of a
config, and the order micro-batches are drawn in. Tokenization lives in train/tokenize.py."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from citrus.data.prepare import training_file
from citrus.data.schema import DataError, load_records
from citrus.train.losses import IGNORE
from citrus.train.tokenize import tokenize_pair, tokenize_prompt, tokenize_sft

log = logging.getLogger(__name__)


class Collator:
    """Pad a list of tokenized examples to the longest one (right padding)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[i, :n] = torch.tensor(e["input_ids"])
            labels[i, :n] = torch.tensor(e["labels"])
            mask[i, :n] = 1
        return {
            "input_ids": ids,
            "labels": labels,
            "attention_mask": mask,
            "tokens": int(mask.sum()),
        }


class PairCollator:
    """Chosen replies then rejected ones in one batch of 2B rows, so a single forward pass scores
    both sides (row i and row B + i are one pair)."""

    def __init__(self, pad_id: int):
        self.pad = Collator(pad_id)

    def __call__(self, pairs: list[dict]) -> dict[str, torch.Tensor]:
        return self.pad([p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])


def pack(examples: list[dict], length: int) -> list[dict]:
    """Pack tokenized examples into rows of at most `length` tokens, first-fit by decreasing
    length. Position ids restart at each example, which makes transformers attend only within
    an example (its packed-sequence mask); the first label of each example is dropped so no
    token is predicted across a boundary."""
    rows: list[list[dict]] = []
    room: list[int] = []
    for e in sorted(examples, key=lambda e: -len(e["input_ids"])):
        n = len(e["input_ids"])
        if n > length:
            raise DataError(f"an example of {n} tokens does not fit a packed row of {length}")
        slot = next((i for i, r in enumerate(room) if r >= n), None)
        if slot is None:
            rows.append([])
            room.append(length)
            slot = len(rows) - 1
        rows[slot].append(e)
        room[slot] -= n
    return [
        {
            "input_ids": [t for e in row for t in e["input_ids"]],
            "labels": [t for e in row for t in [IGNORE, *e["labels"][1:]]],
            "position_ids": [p for e in row for p in range(len(e["input_ids"]))],
        }
        for row in rows
    ]


class PackedCollator:
    """Stack packed rows; padding is a sequence of its own (positions restart, labels ignored),
    and there is no attention mask: the position ids delimit the examples."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        positions = torch.arange(width).repeat(len(rows), 1)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            positions[i, :n] = torch.tensor(r["position_ids"])
            positions[i, n:] = torch.arange(width - n)
        return {
            "input_ids": ids,
            "labels": labels,
            "position_ids": positions,
            "tokens": sum(len(r["input_ids"]) for r in rows),
        }


@dataclass
class TrainData:
    examples: list[dict]  # tokenized training examples (packed rows with trainer.packing)
    collate: Callable
    truncated: int  # records data.truncation cut
    val_examples: list[dict] = field(default_factory=list)  # never packed: one loss per record
    val_collate: Callable | None = None


def held_out(records: list[dict], ratio: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(training records, validation records): a seeded share `ratio` of them held out."""
    if not 0.0 <= ratio < 1.0:
        raise DataError(f"data.val_ratio={ratio}: a share of the records in [0, 1)")
    n_val = round(len(records) * ratio)
    if ratio and not n_val:
        raise DataError(f"data.val_ratio={ratio} of {len(records)} records holds out none")
    picked = set(torch.randperm(len(records), generator=torch.Generator().manual_seed(seed))
                 [:n_val].tolist())  # fmt: skip
    train = [r for i, r in enumerate(records) if i not in picked]
    return train, [r for i, r in enumerate(records) if i in picked]


def build_dataset(cfg: Any, tokenizer: Any, run: Any) -> TrainData:
    """Tokenized examples (packed rows with trainer.packing), the collator that batches them,
    how many records data.truncation cut, and the validation examples with theirs."""
    data = cfg.data
    path = training_file(data, cfg.paths.data_dir)
    run.record.add_input(path, f"data/{data.name}")
    for i, source in enumerate(data.mixture):  # each source's md5 beside the mixed file's
        run.record.add_input(source.path, f"data/{data.name}/mixture/{i}")
    records, val_records = held_out(load_records(path, data.format), data.val_ratio, cfg.seed)
    if data.val_path:
        val_path = Path(data.val_path)
        if not val_path.is_file():
            raise DataError(f"data.val_path: {val_path} does not exist (data={data.name})")
        run.record.add_input(val_path, f"data/{data.name}/validation")
        val_records += load_records(val_path, data.format)
    max_length = data.max_length or cfg.model.max_length
    if data.format == "prompt":  # online RL: prompts only, the completions are sampled
        room = max_length - cfg.algorithm.max_new_tokens
        prompts = [tokenize_prompt(r, tokenizer, room, data.truncation) for r in records]
        return TrainData(prompts, list, sum(1 for p in prompts if p.get("truncated")))
    if data.format == "preference":
        tokenize = lambda r: tokenize_pair(  # noqa: E731
            r, tokenizer, max_length, data.truncation, data.max_prompt_length
        )
        collate: Callable = PairCollator(tokenizer.pad_token_id)
    else:
        completion_only = cfg.algorithm.completion_only_loss
        tokenize = lambda r: tokenize_sft(  # noqa: E731
            r, tokenizer, max_length, completion_only, data.truncation
        )
        collate = Collator(tokenizer.pad_token_id)
    examples = [tokenize(r) for r in records]
    truncated = sum(1 for e in examples if e.get("truncated"))
    if truncated:
        log.warning(
            "data.truncation=%s cut %d of %d records of %s to %d tokens",
            data.truncation, truncated, len(examples), path, max_length,
        )  # fmt: skip
    out = TrainData(examples, collate, truncated, [tokenize(r) for r in val_records], collate)
    if cfg.trainer.packing:
        out.examples = pack(examples, max_length)
        out.collate = PackedCollator(tokenizer.pad_token_id)
        log.info(
            "packed %d examples into %d rows of <= %d tokens",
            len(examples), len(out.examples), max_length,
        )  # fmt: skip
    return out


def micro_batches(
    n: int, t: Any, seed: int, world: int, rank: int, start: int
) -> Iterator[list[int]]:
    """Index lists of this rank's micro-batches, from global micro-batch `start` on, epoch after
    epoch. Each epoch is a permutation seeded by (seed, epoch), so a resumed run sees the data in
    the order an uninterrupted one would."""
    per_epoch = n // (t.micro_batch_size * world)
    if per_epoch == 0:
        raise DataError(
            f"{n} training examples cannot fill one micro-batch of {t.micro_batch_size} "
            f"on {world} processes"
        )
    epoch, offset = divmod(start, per_epoch)
    while True:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for b in range(offset, per_epoch):
            first = (b * world + rank) * t.micro_batch_size
            yield order[first : first + t.micro_batch_size]
        epoch, offset = epoch + 1, 0


def total_steps(t: Any, n_examples: int, world: int = 1, repeats: int = 1) -> int:
    """Optimizer steps of the run: max_steps, or max_epochs over the data if that comes first;
    `repeats` steps per batch (GRPO's num_iterations)."""
    batches = max(1, n_examples // (t.micro_batch_size * t.grad_accum_steps * world))
    steps_per_epoch = batches * repeats
    limits = [t.max_steps] if t.max_steps > 0 else []
    if t.max_epochs:
        limits.append(steps_per_epoch * t.max_epochs)
    return min(limits)
