"""Replays the replies a `citrus evaluate` run recorded instead of generating: re-score an
evaluation with another extractor, answer check or metric at no model cost, or pin a model's
answers for a regression test.

    citrus evaluate engine=replay engine.path=outputs/evaluate/<date>/<time> benchmark=<same>

Each conversation is answered with the response recorded for the same prompt (a question
sampled n times replays its n samples in order); a prompt with no recording fails as an
EngineError, so data jobs mark that item failed and go on.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from citrus.config import EngineConfig
from citrus.data.schema import whole_records
from citrus.engines import Conversation, OnBatch
from citrus.errors import EngineError, MissingFileError


@dataclass
class ReplaySettings(EngineConfig):
    path: str = MISSING  # a predictions.jsonl, or the run directory that holds one


def prompt_key(conversation: Conversation) -> str:
    return json.dumps(conversation, sort_keys=True, ensure_ascii=False)


class ReplayEngine:
    Settings = ReplaySettings

    def __init__(self, engine_cfg: Any, model_cfg: Any):
        self.cfg = engine_cfg
        path = Path(engine_cfg.path)
        self.path = path / "predictions.jsonl" if path.is_dir() else path
        if not self.path.is_file():
            raise MissingFileError(f"engine.path={engine_cfg.path}: no predictions.jsonl there")
        self.recorded: dict[str, list[str]] = {}
        for row in whole_records(self.path):
            if isinstance(row.get("prompt"), list):  # generate mode; likelihood rows hold text
                samples = row.get("samples") or [row]
                self.recorded[prompt_key(row["prompt"])] = [s["response"] for s in samples]
        self.stats = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def generate(
        self,
        conversations: list[Conversation],
        on_batch: OnBatch | None = None,
        seeds: list[int] | None = None,
    ) -> list[str]:
        asked: dict[str, int] = defaultdict(int)  # the k-th ask of a prompt gets its k-th sample
        replies = []
        for conversation in conversations:
            key = prompt_key(conversation)
            if key not in self.recorded:
                question = conversation[-1]["content"][:80]
                raise EngineError(f"replay: {self.path} has no reply to the prompt {question!r}...")
            samples = self.recorded[key]
            replies.append(samples[asked[key] % len(samples)])
            asked[key] += 1
        self.stats["requests"] += len(replies)
        if on_batch:
            on_batch(list(range(len(replies))), replies)
        return replies
