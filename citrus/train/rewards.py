"""Verifiable rewards for online RL: one registry, `REWARDS`, keyed by the names in
`reward.weights` (conf/reward/). A completion's reward is the weighted sum of its components;
each component is logged on its own (`rewards/<name>`).

  letter  1 when the option the extraction ladder reads from the completion is the gold letter,
          else 0 (no reading, or two options named: 0). Multiple-choice prompts only.
  format  1 when the completion is <think>...</think> then <answer>...</answer>, both non-empty
          and nothing after the answer, else 0.
  length  DAPO's soft overlong punishment (Yu et al. 2025, eq. 13): 0 up to max_new_tokens -
          length_cache tokens, then falling linearly to -1 at max_new_tokens (a completion cut
          there gets -1).
  judge   an LLM (the `reward.judge_role` role) scores the completion against the record's
          free-text `reference` answer, 0..100 -> 0..1; an unreadable verdict is 0. For open
          questions, whose gold is words, not a letter (the Citrus open rewrite).

Adding one: a class with `__call__(completions, ctx) -> list[float]` registered here by name,
then a weight for it in a conf/reward/ YAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from citrus.data.schema import MCQuestion
from citrus.errors import ConfigError, DataError
from citrus.evaluate.extractors import EXTRACTORS
from citrus.plugins import is_import_path, lookup
from citrus.prompts import load_prompt
from citrus.synthesis.parsers import parse_score


@dataclass(frozen=True)
class Completion:
    """One sampled completion and the prompt record it answers."""

    text: str
    tokens: int  # its length in tokens, the stop token included
    truncated: bool  # cut at max_new_tokens, never stopped
    record: dict  # the prompt record: messages, question and/or reference


@dataclass
class RewardContext:
    """What components need beyond the completions: the reward config, the completion limit,
    and the job's LLM roles (the judge), built on first use."""

    cfg: Any  # reward.*
    max_new_tokens: int
    roles: Any = None  # citrus.synthesis.common.RoleEngines


class Reward(Protocol):
    def __call__(self, completions: list[Completion], ctx: RewardContext) -> list[float]:
        """One score per completion, in order."""
        ...


def _question(c: Completion) -> MCQuestion:
    q = c.record.get("question")
    if q is None:
        raise DataError(
            f"prompt record {c.record.get('id', '?')!r}: reward letter needs a multiple-choice "
            "'question'; for open answers weigh the judge reward instead"
        )
    return MCQuestion.from_dict(q)


class Letter:
    def __call__(self, completions, ctx):
        reader = lookup(EXTRACTORS, ctx.cfg.extractor, "reward.extractor")
        scores = []
        for c in completions:
            q = _question(c)
            scores.append(float(reader.read(c.text, q.options).letter == q.answer))
        return scores


# the completion whole: reasoning, then the answer, nothing but whitespace around them
FORMAT = re.compile(
    r"\s*<think>(?=.*?\S.*?</think>).*?</think>\s*<answer>\s*\S.*?</answer>\s*", re.S
)


class Format:
    def __call__(self, completions, ctx):
        return [float(FORMAT.fullmatch(c.text) is not None) for c in completions]


def overlong_penalty(tokens: int, max_tokens: int, cache: int) -> float:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13)."""
    if tokens <= max_tokens - cache:
        return 0.0
    if tokens < max_tokens:
        return (max_tokens - cache - tokens) / cache
    return -1.0


class Length:
    def __call__(self, completions, ctx):
        cache = ctx.cfg.length_cache
        if not 0 < cache <= ctx.max_new_tokens:
            raise ConfigError(
                f"reward.length_cache={cache}: in (0, algorithm.max_new_tokens="
                f"{ctx.max_new_tokens}]"
            )
        return [
            -1.0 if c.truncated else overlong_penalty(c.tokens, ctx.max_new_tokens, cache)
            for c in completions
        ]


class Judge:
    def __call__(self, completions, ctx):
        if ctx.roles is None:
            raise ConfigError("reward judge: this job has no LLM roles to ask")
        replies = ctx.roles[ctx.cfg.judge_role].generate(
            [judge_messages(c, ctx.cfg.judge_prompt) for c in completions]
        )
        return [(parse_score(r) or 0) / 100 for r in replies]


def judge_messages(c: Completion, prompt: str) -> list[dict[str, str]]:
    """The judge's request: the question as the policy was asked it, the reference answer (the
    record's `reference`, else its gold option) and the completion."""
    reference, q = c.record.get("reference"), c.record.get("question")
    if not reference:
        if q is None:
            raise DataError(f"prompt record {c.record.get('id', '?')!r}: no reference answer")
        gold = MCQuestion.from_dict(q)
        reference = f"{gold.answer}. {gold.answer_text}"
    system, template = load_prompt(prompt)
    slots = {"question": c.record["messages"][-1]["content"], "reference": reference,
             "response": c.text}  # fmt: skip
    # one pass, so a completion that happens to contain "{reference}" stays as written
    user = re.sub(r"\{(question|reference|response)\}", lambda m: slots[m.group(1)], template)
    return [*([{"role": "system", "content": system}] if system else []),
            {"role": "user", "content": user}]  # fmt: skip


REWARDS: dict[str, Reward] = {
    "letter": Letter(),
    "format": Format(),
    "length": Length(),
    "judge": Judge(),
}


def check_rewards(cfg: Any) -> None:
    unknown = [k for k in cfg.weights if k not in REWARDS and not is_import_path(k)]
    if unknown or not cfg.weights:
        raise ConfigError(
            f"reward.weights={dict(cfg.weights)}: components from {sorted(REWARDS)} or import "
            "paths module:attribute"
        )
    for name in cfg.weights:
        lookup(REWARDS, name, f"reward.weights.{name}")
    lookup(EXTRACTORS, cfg.extractor, "reward.extractor")


def score(completions: list[Completion], ctx: RewardContext) -> dict[str, list[float]]:
    """Each weighted component's scores, and their weighted sum under "reward"."""
    parts = {
        name: lookup(REWARDS, name, f"reward.weights.{name}")(completions, ctx)
        for name in ctx.cfg.weights
    }
    total = [
        sum(ctx.cfg.weights[name] * parts[name][i] for name in parts)
        for i in range(len(completions))
    ]
    return {**parts, "reward": total}
