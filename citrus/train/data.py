"""SFT records -> token ids with completion-only labels, and right-padded batches."""

from __future__ import annotations

from typing import Any

import torch

from citrus.data.schema import DataError

IGNORE = -100  # label value cross-entropy skips


def tokenize_sft(record: dict[str, Any], tokenizer, max_length: int, completion_only: bool = True) -> dict:
    """Token ids of the whole conversation; labels copy them on the final assistant reply
    (its end-of-turn token included, so the model learns to stop) and are IGNORE elsewhere.

    Labels come from the prompt length, never from pad ids: with pad == eos, masking pads
    would also mask the stop token and the model would never learn to end its answer."""
    messages = record["messages"]
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    rid = record.get("id", "?")
    if not full.startswith(prompt):
        raise DataError(f"record {rid!r}: the chat template does not render the prompt as a prefix of the conversation")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    input_ids = prompt_ids + reply_ids
    if len(input_ids) > max_length:
        raise DataError(
            f"record {rid!r}: {len(input_ids)} tokens exceed model.max_length={max_length} "
            "(raise model.max_length or shorten the record)"
        )
    labels = ([IGNORE] * len(prompt_ids) if completion_only else list(prompt_ids)) + reply_ids
    if tokenizer.eos_token_id not in reply_ids:
        raise DataError(f"record {rid!r}: the rendered reply has no end-of-turn token {tokenizer.eos_token!r}")
    return {"input_ids": input_ids, "labels": labels}


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
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
