"""Prompts as files: `<name>.system.txt` (optional) and `<name>.user.txt` with a `{question}` slot.

`citrus_expert` is the model-use prompt published with the Citrus models (system prefix + user
prompt asking for <think>/<answer>); evaluating with it keeps numbers comparable with theirs.
`quickstart` asks for the same <think>/<answer> reply in two lines: it keeps the tiny CPU models'
sequences short (about 40% fewer tokens per training example), and puts the options right
before the reply.
`mc_likelihood` is the plain "Question: ... Answer:" context that `benchmark.mode=likelihood`
scores option letters after, as lm-evaluation-harness does for MedQA.
`answer_check` asks an LLM which option a free-text reply chose (a `{response}` slot), the last
rung of the extraction ladder when `benchmark.answer_check=true`.
The evaluation protocols (conf/protocol/) ask with the published prompts, word for word:
`citrus_pro` and `citrus_direct` (the original Citrus evaluation, for Citrus and for other
models) with `citrus_answer_check`; `huatuo` and `huatuo_strict` (HuatuoGPT-o1's evaluation);
`lm_eval_pubmedqa` (lm-evaluation-harness's PubMedQA context).
The data-synthesis roles (citrus/synthesis/) have one prompt each: `open_rewrite` (label),
`pathway_step`, `pathway_critic`, `pathway_judge`, `pathway_narrative` (expert-pathway
synthesis), `open_answer`, `xpo_pointwise`, `xpo_pairwise` (preference sampling). Slots other than
`{question}` (the stem with its options) are filled by keyword: `{open_question}`, `{answer}`,
`{trace}`, `{step}`, `{feedback}`, `{response}`, ...
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from citrus.errors import ConfigError, MissingFileError

if TYPE_CHECKING:  # prompts sit below data: the question type is an annotation here
    from citrus.data.schema import MCQuestion

PROMPT_DIR = Path(__file__).resolve().parent
# the slots that carry what a prompt is about: the question (all of it, or its parts for prompts
# that lay it out their own way, as the original Citrus and lm-eval ones do), or a reasoning
# trace (the original's completeness judge sees nothing else)
CONTENT_SLOTS = ("question", "open_question", "stem", "options", "context", "trace")


@cache
def load_prompt(name: str) -> tuple[str | None, str]:
    """(system prefix or None, user template) of a prompt shipped in citrus/prompts/."""
    user = PROMPT_DIR / f"{name}.user.txt"
    if not user.is_file():
        known = sorted(p.name.removesuffix(".user.txt") for p in PROMPT_DIR.glob("*.user.txt"))
        raise MissingFileError(f"unknown prompt {name!r} (no {user}); known prompts: {known}")
    system = PROMPT_DIR / f"{name}.system.txt"
    template = user.read_text(encoding="utf-8").rstrip("\n")
    if not any(f"{{{slot}}}" in template for slot in CONTENT_SLOTS):
        raise ConfigError(f"{user}: the user prompt needs one of the placeholders {CONTENT_SLOTS}")
    return (system.read_text(encoding="utf-8").strip() if system.is_file() else None), template


def format_question(q: MCQuestion) -> str:
    """Stem (with its context, if any) followed by one `X. option` line per option."""
    parts = [f"Context: {q.context}"] if q.context else []
    parts.append(q.question.strip())
    parts.extend(f"{letter}. {text}" for letter, text in q.options.items())
    return "\n".join(parts)


def question_slots(q: MCQuestion) -> dict[str, str]:
    """{question}: the whole question as format_question lays it out; {stem}: its text as the
    record has it; {options}: one `X. option` line each; {context}: the context or ""."""
    return {
        "question": format_question(q),
        "stem": q.question,
        "options": "\n".join(f"{letter}. {text}" for letter, text in q.options.items()),
        "context": q.context or "",
    }


def build_messages(q: MCQuestion, prompt: str, **slots: str) -> list[dict[str, str]]:
    """Chat messages that ask `q` with the named prompt (no assistant turn); `slots` fill the
    prompt's other placeholders, e.g. `{response}`."""
    system, template = load_prompt(prompt)
    for name in slots:
        if f"{{{name}}}" not in template:
            raise ConfigError(f"prompt {prompt!r} has no {{{name}}} placeholder")
    values = {**slots, **question_slots(q)}
    # one pass, so a reply that happens to contain "{question}" stays as written
    user = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": user}]


def build_text(q: MCQuestion, prompt: str) -> str:
    """The prompt as plain text, without a chat template (likelihood scoring of base models)."""
    return "\n\n".join(m["content"] for m in build_messages(q, prompt))
