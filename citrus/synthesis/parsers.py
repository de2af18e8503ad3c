"""Parsers for what the LLM roles reply. Models wander from the requested format (markdown,
JSON, extra prose, nothing at all), so each parser accepts the common variants and returns None
when it cannot read the reply; callers record that as the item's failure reason."""

from __future__ import annotations

import json
import re

MARKDOWN = re.compile(r"[*_`#]+")
THINK = re.compile(r"<think>(.*?)</think>", re.S | re.I)


def _clean(text: str) -> str:
    return MARKDOWN.sub("", text or "").strip()


def _json_field(text: str, *keys: str):
    """The first of `keys` in the first JSON object of the reply, if there is one."""
    m = re.search(r"\{.*?\}", text, re.S)
    if not m:
        return None
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    return next((obj[k] for k in keys if k in obj), None)


def parse_rating(text: str) -> tuple[int | None, str]:
    """Critic reply -> (1 valid / 0 invalid / None unreadable, feedback)."""
    text = _clean(text)
    rating = _json_field(text, "rating", "valid", "score")
    feedback = _json_field(text, "feedback") or ""
    if rating is None:
        m = re.search(r"\b(?:rating|valid(?:ity)?|score)\s*[:=]?\s*\(?([01])\b", text, re.I)
        rating = m.group(1) if m else None
    if not feedback:
        m = re.search(r"\bfeedback\s*[:=]\s*(.+)", text, re.I | re.S)
        feedback = m.group(1).strip() if m else ""
    try:
        value = int(rating) if rating is not None and str(rating).strip() in ("0", "1") else None
    except (TypeError, ValueError):
        value = None
    return value, str(feedback).strip()


def parse_verdict(text: str) -> bool | None:
    """Completeness judge reply -> True / False / None."""
    text = _clean(text)
    value = _json_field(text, "complete", "verdict")
    if isinstance(value, bool):
        return value
    m = re.search(r"\bcomplete\s*[:=]\s*(yes|no|true|false|1|0)\b", text, re.I) or re.fullmatch(
        r"\s*(yes|no|true|false|1|0)\W*", text, re.I
    )
    if not m:
        return None
    return m.group(1).lower() in ("yes", "true", "1")


def tagged_number(text: str, tag: str) -> int | None:
    """The first number in the last <tag>...</tag> of a reply ("<score>\n85\n</score>")."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", text or "", re.S | re.I)
    found = re.search(r"\d+(?:\.\d+)?", blocks[-1]) if blocks else None
    return int(float(found.group(0))) if found else None


def parse_score(text: str) -> int | None:
    """Pointwise judge reply -> an integer score in 0..100, or None: the <score> tag (the
    original rubric's format), a JSON field, "Score: N" or a bare number."""
    tagged = tagged_number(text, "score")
    if tagged is not None:
        return tagged if 0 <= tagged <= 100 else None
    text = _clean(text)
    value = _json_field(text, "score")
    if value is None:
        m = re.search(r"\bscore\s*[:=]?\s*(\d{1,3})(?:\s*/\s*100)?\b", text, re.I) or re.fullmatch(
            r"\s*(\d{1,3})(?:\s*/\s*100)?\W*", text
        )
        value = m.group(1) if m else None
    try:
        score = int(float(value))
    except (TypeError, ValueError):
        return None
    return score if 0 <= score <= 100 else None


def parse_pairwise(text: str) -> tuple[int | None, int | None, int | None]:
    """Pairwise judge reply (the original's format) -> (better: 0 a tie, 1 or 2; score of
    answer 1; score of answer 2), each None where unreadable. "Better: A/B" reads as 1/2."""
    better = tagged_number(text, "better_item")
    if better is None:
        letter = parse_preference(text)
        better = {"A": 1, "B": 2}.get(letter) if letter else None
    if better not in (0, 1, 2):
        better = None
    return better, tagged_number(text, "score_1"), tagged_number(text, "score_2")


def parse_preference(text: str) -> str | None:
    """Pairwise judge reply -> "A" or "B", or None."""
    text = _clean(text)
    value = _json_field(text, "better", "winner", "preferred")
    if isinstance(value, str) and value.strip().upper() in ("A", "B"):
        return value.strip().upper()
    m = re.search(
        r"\b(?:better|winner|preferred)\s*(?:answer)?\s*[:=]?\s*(?:answer\s*)?\(?([AB])\)?(?![\w])",
        text,
        re.I,
    ) or re.fullmatch(r"\s*(?:answer\s*)?\(?([AB])\)?\W*", text, re.I)
    return m.group(1).upper() if m else None


REQUEST = re.compile(
    r"(?:please\s+)?(?:describe|explain|identify|name|state|determine|give|provide|list|discuss|"
    r"outline|suggest|propose|specify|answer|what|which|how|why)\b[^\n]*[.:]$",
    re.I,
)


def parse_open_question(text: str) -> str | None:
    """Open-ended rewrite -> the question text, without a label, quotes or options."""
    text = THINK.sub("", text or "").strip()
    text = re.sub(
        r"^\s*(?:open[- ]ended question|question|rewritten question)\s*:\s*",
        "",
        _clean(text),
        flags=re.I,
    ).strip()
    text = text.strip('"\u201c\u201d').strip()
    if re.search(r"^\s*\(?[A-E][.)]\s", text, re.M):  # options crept back in
        return None
    # a question ("...?") or a request ("Please describe the most likely diagnosis.", 13 of the
    # 50 rewrites in the original's labelled sample); a stem that asks nothing is no rewrite
    last = re.split(r"(?<=[.?!:])\s+|\n+", text.rstrip())[-1]
    asks = text.rstrip().endswith("?") or REQUEST.match(last)
    return text if len(text.split()) >= 5 and asks else None


def parse_step(text: str) -> str | None:
    """A pathway step: the last <Reasoning> block if there is one, else the reply itself, minus a
    label; empty replies are unreadable."""
    blocks = re.findall(r"<Reasoning>(.*?)(?:</Reasoning>|$)", text or "", re.S | re.I)
    text = blocks[-1] if blocks else text
    text = re.sub(
        r"^\s*(?:next\s+)?step\s*\d*\s*:\s*", "", THINK.sub("", text or "").strip(), flags=re.I
    ).strip()
    return text if len(text.split()) >= 3 else None


ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)


def split_reply(reply: str) -> tuple[str, str]:
    """(reasoning, answer) of a <think>..</think><answer>..</answer> reply ("" where missing)."""
    think = THINK.search(reply or "")
    answers = ANSWER.findall(reply or "")
    return (think.group(1).strip() if think else ""), (answers[-1].strip() if answers else "")


def rewrapped(reply: str) -> str:
    """A reply in the layout the original Citrus training data has (its example sft_data.jsonl):
    "<think>\n...\n</think>\n<answer>\n...\n</answer>"."""
    think, answer = split_reply(reply)
    return f"<think>\n{think}\n</think>\n<answer>\n{answer}\n</answer>"
