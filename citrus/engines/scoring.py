"""Token ids for likelihood scoring, shared by the engines that score (hf, vllm): the
tokenization and BOS policy of lm-evaluation-harness, so every engine scores the same tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def encode(tokenizer: Any, text: str, add_bos_token: bool | None) -> list[int]:
    """Token ids of a scored text. add_bos_token: null = the tokenizer's own rule (lm-eval's
    default: SmolLM2 and Qwen add no BOS, Llama-3 adds <|begin_of_text|>); true = always
    prepend it; false = never."""
    ids = tokenizer(text, add_special_tokens=add_bos_token is None)["input_ids"]
    bos = tokenizer.bos_token_id
    if add_bos_token and bos is not None and ids[:1] != [bos]:
        ids = [bos, *ids]
    return ids


def encode_pair(
    encode: Callable[[str], list[int]], context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Context and continuation token ids by lm-evaluation-harness's rule: the context's
    trailing spaces move to the continuation, the two are encoded whole, and the continuation is
    what follows the context's own encoding."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids = encode(context)
    return context_ids, encode(context + continuation)[len(context_ids) :]
