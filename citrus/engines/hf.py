"""transformers generation: batched, left-padded, greedy or sampled, on the local device."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig

from citrus.config import EngineConfig
from citrus.engines import Conversation, OnBatch
from citrus.engines.scoring import encode, encode_pair
from citrus.errors import EngineError
from citrus.models import load_model, load_tokenizer


@dataclass
class HFSettings(EngineConfig):
    # likelihood scoring: BOS before each context? null: the tokenizer's own rule, as
    # lm-evaluation-harness does (SmolLM2 and Qwen add none, Llama-3 adds <|begin_of_text|>);
    # true: always prepend it; false: never
    add_bos_token: bool | None = None


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's end-of-turn and every eos the checkpoint declares (Llama-3.1 instruct
    lists <|end_of_text|>, <|eom_id|> and <|eot_id|>): where a generation stops."""
    config = getattr(model, "generation_config", None)
    declared = config.eos_token_id if config is not None else None
    declared = declared if isinstance(declared, list) else [declared]
    return sorted({i for i in [*declared, tokenizer.eos_token_id] if i is not None})


class HFEngine:
    Settings = HFSettings

    def __init__(self, engine_cfg: Any, model_cfg: Any):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = load_tokenizer(model_cfg, padding_side="left")
        self._setup(engine_cfg, load_model(model_cfg).to(device).eval(), tokenizer, device)

    @classmethod
    def around(
        cls, engine_cfg: Any, model: Any, tokenizer: Any, device: Any, synced_gpus: bool = False
    ) -> HFEngine:
        """An engine over a model already in memory: the one being trained (validation, GRPO's
        rollouts). synced_gpus: an FSDP2-sharded model, whose every forward is a collective, so
        each process keeps generating until all are done."""
        engine = cls.__new__(cls)
        engine._setup(engine_cfg, model, tokenizer, device)
        engine.synced_gpus = synced_gpus
        return engine

    def _setup(self, engine_cfg: Any, model: Any, tokenizer: Any, device: Any) -> None:
        self.cfg, self.model, self.tokenizer, self.device = engine_cfg, model, tokenizer, device
        self.max_length = getattr(self.model.config, "max_position_embeddings", None)
        self.eos_ids = stop_ids(model, tokenizer)
        self.stats = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.synced_gpus = False

    def render(self, conversation: Conversation) -> str:
        return self.tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )

    @torch.inference_mode()
    def generate(
        self,
        conversations: list[Conversation],
        on_batch: OnBatch | None = None,
        seeds: list[int] | None = None,
    ) -> list[str]:
        """Replies in input order. Prompts are batched by length to waste little on padding;
        `on_batch(indices, replies)` fires as each batch finishes (append-only outputs).
        Sampling draws from one generator seeded for the whole call, so repeated prompts get
        different samples: with engine.seed, or with the first of the per-request `seeds` (which
        servers take one by one), so two calls asking the same prompts with other seeds differ."""
        prompts = [self.render(c) for c in conversations]
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        replies: list[str | None] = [None] * len(prompts)
        torch.manual_seed(seeds[0] if seeds else self.cfg.seed)
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            try:
                texts = self._generate_batch([prompts[i] for i in idx])
            except ValueError as e:  # this request cannot be answered (a prompt too long, ...);
                raise EngineError(f"hf: {e}") from e  # out of memory and bugs still stop the job
            for i, text in zip(idx, texts):
                replies[i] = text
            if on_batch:
                on_batch(idx, texts)
        return replies  # type: ignore[return-value]

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[str]) -> list[str]:
        enc = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        width = enc["input_ids"].shape[1]
        max_new = self.cfg.max_new_tokens
        if self.max_length:
            max_new = min(max_new, self.max_length - width)
        if max_new <= 0:
            raise ValueError(f"a prompt of {width} tokens leaves no room to generate (model limit "
                             f"{self.max_length})")  # fmt: skip
        sample = self.cfg.temperature > 0
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
        new_tokens = out[:, width:]
        stops = torch.tensor([self.tokenizer.pad_token_id, *self.eos_ids], device=new_tokens.device)
        self.stats["requests"] += len(prompts)
        self.stats["prompt_tokens"] += int(enc["attention_mask"].sum())
        self.stats["completion_tokens"] += int((~torch.isin(new_tokens, stops)).sum())
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    @torch.no_grad()  # not inference_mode: the policy being trained samples (FSDP2 shards)
    def sample_ids(self, prompts: list[list[int]], n: int, seed: int) -> list[list[list[int]]]:
        """n sampled completions per prompt, as token ids up to and with the first stop token,
        from the full distribution at the engine's temperature (top_k off, top_p as set). The
        global RNG is left as it was: the samples follow from `seed` alone."""
        was_training = self.model.training
        self.model.eval()
        out: list[list[list[int]]] = []
        per_call = max(1, self.cfg.batch_size // n)  # prompts per generate call
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                for start in range(0, len(prompts), per_call):
                    out += self._sample_batch(prompts[start : start + per_call], n)
        finally:
            self.model.train(was_training)
        return out

    def _sample_batch(self, prompts: list[list[int]], n: int) -> list[list[list[int]]]:
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):  # left padding: every prompt ends where sampling starts
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        # a fresh config, not the checkpoint's: its repetition penalty or min_p would sample
        # from another distribution than the one the loss scores
        sampling = GenerationConfig(
            do_sample=True, temperature=self.cfg.temperature, top_p=self.cfg.top_p, top_k=0,
            max_new_tokens=self.cfg.max_new_tokens, num_return_sequences=n,
            eos_token_id=self.eos_ids, pad_token_id=pad,
        )  # fmt: skip
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            generation_config=sampling,
            synced_gpus=self.synced_gpus,
        )
        stops = set(self.eos_ids)
        completions = []
        for row in out[:, width:].tolist():
            end = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            completions.append(row[:end])
        self.stats["requests"] += len(completions)
        self.stats["prompt_tokens"] += int(mask.sum()) * n
        self.stats["completion_tokens"] += sum(len(c) for c in completions)
        return [completions[i * n : (i + 1) * n] for i in range(len(prompts))]

    def stream(self, conversation: Conversation) -> Iterator[str]:
        """One reply, piece by piece as it is generated (for `citrus chat`)."""
        from transformers import TextIteratorStreamer

        enc = self.tokenizer(
            self.render(conversation), return_tensors="pt", add_special_tokens=False
        ).to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sample = self.cfg.temperature > 0
        kwargs = dict(
            **enc,
            max_new_tokens=self.cfg.max_new_tokens,
            do_sample=sample,
            top_k=None,
            temperature=self.cfg.temperature if sample else None,
            top_p=self.cfg.top_p if sample else None,
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            streamer=streamer,
        )
        worker = threading.Thread(
            target=torch.inference_mode()(self.model.generate), kwargs=kwargs, daemon=True
        )
        worker.start()
        yield from streamer
        worker.join()

    def encode(self, text: str) -> list[int]:
        """Token ids of a scored text, with or without BOS by `add_bos_token`."""
        return encode(self.tokenizer, text, self.cfg.add_bos_token)

    @torch.no_grad()  # not inference_mode: validation scores a model in training (FSDP2 shards)
    def loglikelihoods(
        self,
        contexts: list[str],
        choices: list[list[str]],
        on_batch: OnBatch | None = None,
    ) -> list[list[float]]:
        """log p(choice | context), summed over the choice's tokens, for every choice of every
        context: multiple-choice scoring as in lm-evaluation-harness (Gao et al. 2021), with its
        tokenization (`encode_pair`) and BOS policy (`add_bos_token`).

        When each choice of a context is a single token (" A", " B", ...), one forward pass
        over the context scores them all from its last position; otherwise each context+choice
        sequence gets its own pass."""
        requests = []  # (question index, token ids to run, [(choice index, choice token ids)])
        for i, (context, options) in enumerate(zip(contexts, choices)):
            pairs = [encode_pair(self.encode, context, c) for c in options]
            ctx, conts = pairs[0][0], [cont for _, cont in pairs]
            if all(len(c) == 1 for c in conts):
                requests.append((i, ctx, list(enumerate(conts))))
            else:
                requests += [(i, ctx + c[:-1], [(j, c)]) for j, c in enumerate(conts)]
        scores: list[list[float | None]] = [[None] * len(c) for c in choices]
        order = sorted(range(len(requests)), key=lambda r: -len(requests[r][1]))
        pending: dict[int, int] = {}  # question -> requests still to score
        for i, _, _ in requests:
            pending[i] = pending.get(i, 0) + 1
        for start in range(0, len(order), self.cfg.batch_size):
            batch = [requests[r] for r in order[start : start + self.cfg.batch_size]]
            width = max(len(ids) for _, ids, _ in batch)
            ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, (_, seq, _) in enumerate(batch):  # left padding: every sequence ends at -1
                ids[row, width - len(seq) :] = torch.tensor(seq)
                mask[row, width - len(seq) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            # Only the last positions predict a choice: skip the LM head everywhere else.
            keep = max(len(cont) for _, _, conts in batch for _, cont in conts)
            logits = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
                logits_to_keep=keep,
            ).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1)
            finished = []
            for row, (i, _seq, conts) in enumerate(batch):
                for j, cont in conts:
                    if len(cont) == 1:
                        scores[i][j] = float(logprobs[row, -1, cont[0]])
                    else:  # positions predicting the choice's tokens, the last fed one included
                        steps = logprobs[row, -len(cont) :, :]
                        scores[i][j] = float(
                            steps.gather(-1, torch.tensor(cont, device=steps.device)[:, None]).sum()
                        )
                pending[i] -= 1
                if pending[i] == 0:
                    finished.append(i)
            if on_batch and finished:
                on_batch(finished, [scores[i] for i in finished])
        return scores  # type: ignore[return-value]
