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


def parse_score(text: str) -> int | None:
    """Pointwise judge reply -> an integer score in 0..100, or None."""
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
    return text if len(text.split()) >= 5 and text.rstrip().endswith("?") else None


def parse_step(text: str) -> str | None:
    """A pathway step: the reply itself, minus a label; empty or runaway replies are unreadable."""
    text = re.sub(
        r"^\s*(?:next\s+)?step\s*\d*\s*:\s*", "", THINK.sub("", text or "").strip(), flags=re.I
    ).strip()
    return text if len(text.split()) >= 3 else None
