"""Answer extraction: model output -> option letter, and the rule that found it.

The ladder, first match wins:
  answer_tag   inside the last <answer>...</answer> (an unclosed tag runs to the end):
               "C", "(C)", "C. text", "**C**", "Option C", "the answer is C", or one option's text
  answer_is    anywhere: "answer is (C)", "Answer: C", "correct option is C" (the last one)
  bare_letter  the whole reply, or its last line, is a letter: "C", "(C).", "**C**"
  option_text  exactly one option's text appears in the reply's last 300 characters
  none         nothing matched; the prediction counts as wrong
Every prediction stores its rule, so a score can be audited and extractors compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EXTRACTOR_VERSION = "1"  # bump when a rule changes: scores from different versions differ
ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)
MARKDOWN = re.compile(r"[*_`#>]+")


@dataclass(frozen=True)
class Extraction:
    letter: str | None
    rule: str


def _answer_is(text: str, letters: str) -> str | None:
    """The last "answer is X" phrase. A capital letter stands alone; a lower-case one only in
    parentheses or at the end ("the answer is a" + noun is an article)."""
    upper, lower = letters.upper(), letters.lower()
    pattern = re.compile(
        r"(?i:answer|correct option|correct choice|best option|best choice|correct answer)"
        r"\s*(?i:is|would be|should be|:|-|=)?\s*:?\s*(?i:option|choice)?\s*"
        rf"(?:\(([{upper}{lower}])\)|\b([{upper}])\b(?![\w-])|\b([{lower}])(?=\s*[.)]?\s*$))",
        re.M,
    )
    found = pattern.findall(MARKDOWN.sub("", text))
    return "".join(found[-1]).upper() if found else None


def _leading_letter(text: str, letters: str) -> str | None:
    """`C`, `(C)`, `C.`, `C)`, `C:`, `C -` at the very start; a bare capital followed by a
    word ("A 45-year-old ...") is an article, not an answer."""
    text = MARKDOWN.sub("", text).strip()
    m = re.match(
        rf"^(?:option|choice)?\s*\(?([{letters}])(?:\)|\.|:|\s+-|\s*$|\)?\s*\n)", text, re.I
    )
    if m and (m.group(1).isupper() or text[:1] == "(" or len(text) <= 3):
        return m.group(1).upper()
    return None


def _bare_letter(text: str, letters: str) -> str | None:
    lines = [MARKDOWN.sub("", line).strip() for line in text.strip().splitlines() if line.strip()]
    for candidate in (" ".join(lines), lines[-1] if lines else ""):
        m = re.fullmatch(rf"\(?([{letters}])\)?[.!]?", candidate, re.I)
        if m:
            return m.group(1).upper()
    return None


def _option_text(text: str, options: dict[str, str]) -> str | None:
    tail = text[-300:].lower()
    hits = {k for k, v in options.items() if v.strip() and v.strip().lower() in tail}
    # drop an option whose text is only a part of another hit
    # ("cystitis" in "pyelonephritis and cystitis")
    hits = {
        k
        for k in hits
        if not any(k != o and options[k].lower() in options[o].lower() for o in hits)
    }
    return hits.pop() if len(hits) == 1 else None


def extract_answer(response: str, options: dict[str, str]) -> Extraction:
    letters = "".join(options)
    tags = ANSWER_TAG.findall(response)
    if tags:
        inside = tags[-1].strip()
        letter = (
            _leading_letter(inside, letters)
            or _answer_is(inside, letters)
            or _bare_letter(inside, letters)
            or _option_text(inside, options)
        )
        if letter:
            return Extraction(letter, "answer_tag")
    body = ANSWER_TAG.sub(" ", response) if tags else response
    if letter := _answer_is(body, letters):
        return Extraction(letter, "answer_is")
    if letter := _bare_letter(response, letters):
        return Extraction(letter, "bare_letter")
    if letter := _option_text(response, options):
        return Extraction(letter, "option_text")
    return Extraction(None, "none")
