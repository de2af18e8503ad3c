"""`citrus chat`: the Citrus expert prompt, streamed replies split into think and answer."""

from __future__ import annotations

import json

import pytest
from chat_server import ChatServer
from conftest import compose_config

from citrus.chat import expert_messages, render, split_reply
from citrus.engines.hf import HFEngine
from citrus.jobs import execute
from citrus.prompts import load_prompt

REPLY = (
    "<think>\nFever and flank pain; so the kidney.\n</think>\n"
    "<answer>\nB. acute pyelonephritis\n</answer>"
)


@pytest.mark.parametrize(
    "text,expected",
    [
        (REPLY, ("Fever and flank pain; so the kidney.", "B. acute pyelonephritis")),
        ("<think>still thinking", ("still thinking", None)),  # mid-stream
        ("no tags at all", (None, None)),
        ("<answer>C</answer>", (None, "C")),
    ],
)
def test_split_reply(text, expected):
    assert split_reply(text) == expected


def test_render_dims_the_thinking_and_highlights_the_answer():
    text = render("intro " + REPLY)
    styles = {str(span.style) for span in text.spans}
    assert text.plain == "intro " + REPLY and styles == {"dim", "bold green"}


def test_the_expert_prompt_frames_every_turn():
    system, template = load_prompt("citrus_expert")
    first = expert_messages([], "What causes fever?")
    assert (
        first[0] == {"role": "system", "content": system}
        and "What causes fever?" in first[1]["content"]
    )
    later = expert_messages([*first, {"role": "assistant", "content": REPLY}], "And flank pain?")
    assert [m["role"] for m in later] == ["system", "user", "assistant", "user"]


class Scripted:
    def generate(self, conversations, on_batch=None, seeds=None):
        return [REPLY for _ in conversations]


def test_one_shot_chat_over_a_served_model_streams_and_splits(tmp_path):
    with ChatServer(Scripted()) as server:
        overrides = [
            "logger=none",
            "engine=openai",
            f"engine.base_url={server.url}",
            "engine.served_model=citrus",
            "chat.prompt=A 30-year-old woman has fever and flank pain. Diagnosis?",
        ]
        metrics = execute("chat", compose_config("chat", overrides), tmp_path, overrides).metrics
    assert metrics["chat/turns"] == 1 and server.seen == {"stream": 1}
    turn = json.loads((tmp_path / "chat.jsonl").read_text())
    assert turn["reply"] == REPLY and turn["answer"] == "B. acute pyelonephritis"
    assert (
        turn["messages"][0]["role"] == "system"
        and "fever and flank pain" in turn["messages"][1]["content"]
    )


def test_one_shot_chat_with_a_local_model_streams_what_generate_returns(tmp_path):
    overrides = [
        "logger=none",
        "model=tiny_llama",
        "engine.max_new_tokens=16",
        "chat.prompt=Fever and flank pain?",
    ]
    cfg = compose_config("chat", overrides)
    execute("chat", cfg, tmp_path, overrides)
    turn = json.loads((tmp_path / "chat.jsonl").read_text())
    assert turn["reply"] == HFEngine(cfg.engine, cfg.model).generate([turn["messages"]])[0]
    assert (turn["think"], turn["answer"]) == split_reply(turn["reply"])
