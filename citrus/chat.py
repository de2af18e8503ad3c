"""`citrus chat`: talk to a model with the Citrus expert prompt, in the terminal.

The system prefix and user prompt are the ones published with the Citrus models
(citrus/prompts/citrus_expert); the reply streams as it is generated, its <think> part dimmed
and its <answer> part highlighted. `prompt="..."` asks once and exits (for scripts); without it
the chat is interactive (an empty line or Ctrl-D ends it). Any engine works: hf (a local
checkpoint), openai (a served model: `citrus serve`, or a hosted API), vllm (no streaming).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from rich.live import Live
from rich.text import Text

from citrus.engines import Streaming, build_engine
from citrus.prompts import load_prompt
from citrus.result import JobResult
from citrus.tracking import console

THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)
ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)


def split_reply(text: str) -> tuple[str | None, str | None]:
    """(think, answer) of a reply; an unclosed tag runs to the end (a reply still streaming)."""
    think, answer = THINK.search(text), ANSWER.search(text)
    return (think.group(1).strip() if think else None), (
        answer.group(1).strip() if answer else None
    )


def render(text: str) -> Text:
    """The reply with <think>...</think> dimmed and <answer>...</answer> in bold green."""
    out, pos = Text(), 0
    for m in re.finditer(r"<think>.*?(?:</think>|$)|<answer>.*?(?:</answer>|$)", text, re.S):
        out.append(text[pos : m.start()])
        out.append(m.group(0), style="dim" if m.group(0).startswith("<think>") else "bold green")
        pos = m.end()
    out.append(text[pos:])
    return out


def expert_messages(history: list[dict], question: str) -> list[dict]:
    system, template = load_prompt("citrus_expert")
    head = [{"role": "system", "content": system}] if system and not history else []
    return [*head, *history, {"role": "user", "content": template.replace("{question}", question)}]


def stream(engine: Any, messages: list[dict]) -> Iterator[str]:
    if isinstance(engine, Streaming):
        yield from engine.stream(messages)
    else:
        yield engine.generate([messages])[0]


def ask(engine: Any, messages: list[dict]) -> str:
    text = ""
    with Live(render(text), console=console, refresh_per_second=12, transient=False) as live:
        for piece in stream(engine, messages):
            text += piece
            live.update(render(text))
    return text


def run(cfg: Any, run: Any) -> JobResult:
    engine = build_engine(cfg.engine, cfg.model)
    history: list[dict] = []
    transcript = run.dir / "chat.jsonl"
    questions = [cfg.chat.prompt] if cfg.chat.prompt else None
    turns = 0
    while True:
        if questions is not None:
            if not questions:
                break
            question = questions.pop()
        else:
            try:
                question = console.input("[bold]you>[/] ").strip()
            except EOFError:
                break
            if not question:
                break
        messages = expert_messages(history, question)
        reply = ask(engine, messages)
        think, answer = split_reply(reply)
        with transcript.open("a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {"messages": messages, "reply": reply, "think": think, "answer": answer},
                    ensure_ascii=False,
                )
                + "\n"
            )
        history = [*messages, {"role": "assistant", "content": reply}]
        turns += 1
    return JobResult({"chat/turns": turns}, {"transcript": transcript})
