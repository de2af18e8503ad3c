"""transformers generation: batched, left-padded, greedy or sampled, on the local device."""

from __future__ import annotations

from typing import Any, Callable

import torch

from citrus.models import load_model, load_tokenizer


class HFEngine:
    def __init__(self, engine_cfg: Any, model_cfg: Any):
        self.cfg = engine_cfg
        self.tokenizer = load_tokenizer(model_cfg, padding_side="left")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(model_cfg).to(self.device).eval()
        self.max_length = getattr(self.model.config, "max_position_embeddings", None)
        # Stop at the tokenizer's end-of-turn and at every eos the checkpoint declares
        # (Llama-3.1 instruct lists <|end_of_text|>, <|eom_id|> and <|eot_id|>).
        declared = self.model.generation_config.eos_token_id
        declared = declared if isinstance(declared, list) else [declared]
        self.eos_ids = sorted({i for i in [*declared, self.tokenizer.eos_token_id] if i is not None})

    def render(self, conversation: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def generate(self, conversations: list[list[dict[str, str]]], on_batch: Callable[[list[int], list[str]], None] | None = None) -> list[str]:
        """Replies in input order. Prompts are batched by length to waste little on padding;
        `on_batch(indices, replies)` fires as each batch finishes (append-only outputs)."""
        prompts = [self.render(c) for c in conversations]
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        replies: list[str | None] = [None] * len(prompts)
        sample = self.cfg.temperature > 0
        torch.manual_seed(self.cfg.seed)
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            enc = self.tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            max_new = self.cfg.max_new_tokens
            if self.max_length:
                max_new = min(max_new, self.max_length - enc["input_ids"].shape[1])
            if max_new <= 0:
                raise ValueError(f"prompt of {enc['input_ids'].shape[1]} tokens leaves no room to generate (model limit {self.max_length})")
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new,
                do_sample=sample,
                temperature=self.cfg.temperature if sample else None,
                top_p=self.cfg.top_p if sample else None,
                top_k=None,
                eos_token_id=self.eos_ids,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            texts = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                replies[i] = text
            if on_batch:
                on_batch(idx, texts)
        return replies  # type: ignore[return-value]
