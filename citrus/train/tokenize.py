"""Training records -> token ids: an SFT example's completion-only labels, a preference pair's
chosen and rejected replies after one prompt, an RL prompt with its generation prompt; records
longer than the limit are refused or cut on the side `data.truncation` names."""

from __future__ import annotations

from typing import Any

from citrus.data.schema import DataError
from citrus.train.losses import IGNORE

TRUNCATION = ("error", "left", "right")


def tokenize_prompt(record: dict, tokenizer: Any, room: int, truncation: str) -> dict:
    """A prompt record's ids with the generation prompt; at most `room` tokens (the record
    limit less algorithm.max_new_tokens), else an error or a cut on the `truncation` side."""
    text = tokenizer.apply_chat_template(
        record["messages"], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > room:
        if truncation == "error":
            raise DataError(
                f"prompt record {record.get('id', '?')!r}: {len(ids)} tokens leave no room for "
                f"algorithm.max_new_tokens within the record limit ({room} left for the prompt); "
                "raise model.max_length / data.max_length, or set data.truncation=left"
            )
        cut = ids[-room:] if truncation == "left" else ids[:room]
        return {"id": record.get("id", "?"), "prompt_ids": cut, "record": record, "truncated": True}
    return {"id": record.get("id", "?"), "prompt_ids": ids, "record": record}


def render(record: dict[str, Any], tokenizer) -> tuple[list[int], list[int]]:
    """Token ids of the prompt (every turn before the final reply, with the generation prompt)
    and of that reply, its end-of-turn token included."""
    messages = record["messages"]
    prompt = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    rid = record.get("id", "?")
    if not full.startswith(prompt):
        raise DataError(
            f"record {rid!r}: the chat template does not render the prompt as a prefix "
            "of the conversation"
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id not in reply_ids:
        raise DataError(
            f"record {rid!r}: the rendered reply has no end-of-turn token {tokenizer.eos_token!r}"
        )
    return prompt_ids, reply_ids


def _too_long(rid: str, n: int, max_length: int) -> DataError:
    return DataError(
        f"record {rid!r}: {n} tokens exceed the limit of {max_length} (model.max_length, or "
        "data.max_length): raise it, shorten the record, or set data.truncation=left|right"
    )


def tokenize_sft(
    record: dict[str, Any],
    tokenizer,
    max_length: int,
    completion_only: bool = True,
    truncation: str = "error",
) -> dict:
    """Token ids of the whole conversation; labels copy them on the final assistant reply
    (its end-of-turn token included, so the model learns to stop) and are IGNORE elsewhere.
    Longer than max_length: an error, or cut on the `truncation` side (left keeps the end, as the
    original Citrus SFT script does); a cut example carries `truncated: True`.

    Labels come from the prompt length, never from pad ids: with pad == eos, masking pads
    would also mask the stop token and the model would never learn to end its answer."""
    rid = record.get("id", "?")
    prompt_ids, reply_ids = render(record, tokenizer)
    input_ids = prompt_ids + reply_ids
    labels = ([IGNORE] * len(prompt_ids) if completion_only else list(prompt_ids)) + reply_ids
    if len(input_ids) <= max_length:
        return {"input_ids": input_ids, "labels": labels}
    if truncation == "error":
        raise _too_long(rid, len(input_ids), max_length)
    keep = slice(-max_length, None) if truncation == "left" else slice(0, max_length)
    if all(t == IGNORE for t in labels[keep]):
        raise DataError(
            f"record {rid!r}: nothing of the reply is left after data.truncation={truncation} "
            f"to {max_length} tokens"
        )
    return {"input_ids": input_ids[keep], "labels": labels[keep], "truncated": True}


def tokenize_pair(
    record: dict[str, Any],
    tokenizer,
    max_length: int,
    truncation: str = "error",
    max_prompt_length: int | None = None,
) -> dict[str, dict]:
    """A preference record (prompt messages, chosen and rejected replies) as two SFT examples
    that share the prompt; labels cover each reply. A pair longer than max_length is an error,
    or (TRL's CPO/DPO rule) has its prompt cut to max_prompt_length on the `truncation` side
    (left keeps its end), then both replies cut at their end to fit."""
    rid = record.get("id", "?")
    rendered = {
        side: render({"id": rid, "messages": [*record["messages"],
                      {"role": "assistant", "content": record[side]}]}, tokenizer)
        for side in ("chosen", "rejected")
    }  # fmt: skip
    prompt = rendered["chosen"][0]
    longest = len(prompt) + max(len(reply) for _, reply in rendered.values())
    cut = longest > max_length
    if cut and truncation == "error":
        raise _too_long(rid, longest, max_length)
    if cut and max_prompt_length is not None and len(prompt) > max_prompt_length:
        prompt = prompt[-max_prompt_length:] if truncation == "left" else prompt[:max_prompt_length]
    room = max_length - len(prompt)
    if room < 1:
        raise DataError(
            f"record {rid!r}: its prompt of {len(prompt)} tokens leaves no room for a reply in "
            f"{max_length} (set data.max_prompt_length below it)"
        )
    pair = {}
    for side, (_, reply) in rendered.items():
        reply = reply[:room]
        pair[side] = {"input_ids": prompt + reply, "labels": [IGNORE] * len(prompt) + reply}
    if cut:
        pair["truncated"] = True
    return pair
