"""How a protocol reads a reply: one registry, EXTRACTORS (benchmark.extractor).

  ladder  citrus's own reading (citrus/evaluate/extract.py): never a wrong letter; a reply it
          cannot read is `none` and may go to the LLM answer check.
  citrus  the original Citrus evaluation (jdh-algo/Citrus, src/task/single_task/
          single_task_evaluation.py): the text of the last <answer>...</answer>, else the whole
          reply, stripped. Up to 3 characters is the answer as written and is compared with the
          gold letter exactly (so "B." is wrong); anything longer goes to the LLM answer check,
          which is shown that text and whose reply, stripped, is the answer.
  huatuo  HuatuoGPT-o1's match_choice (FreedomIntelligence/HuatuoGPT-o1, evaluation/scorer.py):
          after "## Final Response", the last "answer is X"; else the last letter standing
          alone; else the option text found last; else the option text most similar to the
          reply (difflib). It always names an option. Its scorer reports the better of the
          first-match and last-match accuracies per dataset; citrus scores the last match.

Adding one: a class with the three methods of `Extractor`, registered here by name.
"""

from __future__ import annotations

import difflib
import re
from typing import Protocol

from citrus.evaluate.extract import EXTRACTOR_VERSION, Extraction, extract_answer

CHECK_TAIL = 2000  # characters of a reply the ladder's answer check reads: a conclusion sits last


class Extractor(Protocol):
    """Reads replies to one multiple-choice question."""

    version: str  # in the evaluation's resume stamp: bump it when a reading changes

    def read(self, reply: str, options: dict[str, str]) -> Extraction:
        """The answer of a reply and the rule that found it; rule `none`: unread, so it goes to
        the LLM answer check when the protocol has one."""
        ...

    def check_text(self, reply: str) -> str:
        """What the LLM answer check is shown of an unread reply."""
        ...

    def read_check(self, reply: str, options: dict[str, str]) -> str | None:
        """The answer the LLM answer check's own reply gives (None: still unread)."""
        ...


class Ladder:
    version = EXTRACTOR_VERSION

    def read(self, reply: str, options: dict[str, str]) -> Extraction:
        return extract_answer(reply, options)

    def check_text(self, reply: str) -> str:
        return reply[-CHECK_TAIL:]

    def read_check(self, reply: str, options: dict[str, str]) -> str | None:
        return extract_answer(reply, options).letter


CITRUS_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)


class CitrusOriginal:
    version = "1"

    def _answer(self, reply: str) -> tuple[str, str]:
        tags = CITRUS_TAG.findall(reply)
        return (tags[-1].strip(), "citrus_tag") if tags else (reply.strip(), "citrus_reply")

    def read(self, reply: str, options: dict[str, str]) -> Extraction:
        answer, rule = self._answer(reply)
        if not answer:  # an empty reply is no answer (the original counts only failed requests)
            return Extraction(None, "none")
        return Extraction(answer, rule) if len(answer) <= 3 else Extraction(None, "none")

    def check_text(self, reply: str) -> str:
        return self._answer(reply)[0]

    def read_check(self, reply: str, options: dict[str, str]) -> str | None:
        return reply.strip()


FINAL_RESPONSE = "## Final Response\n\n"
HUATUO_LETTERS = "ABCDEFGHIJKLMN"


class Huatuo:
    version = "1"

    def read(self, reply: str, options: dict[str, str]) -> Extraction:
        text = reply.split(FINAL_RESPONSE)[-1]
        found = re.findall(r"answer is\s*?([A-N])", text, re.S)
        if found:
            return Extraction(found[-1], "huatuo_answer_is")
        letters = HUATUO_LETTERS[: len(options)]
        # a letter between non-word (or CJK) characters, not the article "A "
        before = r"(?:[\u4e00-\u9fff]|is |是|项|\*|\W|\ |\(|为|^|'|\"|#)"
        # the characters on both sides are consumed, as in the original: in "A,B" only A stands
        found = re.findall(before + rf"(?![aA] )([{letters}])(?:\W|[\u4e00-\u9fff]|$)", text, re.S)
        if found:
            return Extraction(found[-1], "huatuo_letter")
        lower = text.lower()
        last = {k: lower.rfind(v.lower()) for k, v in options.items() if v.lower() in lower}
        if last:
            return Extraction(max(last, key=last.__getitem__), "huatuo_text")
        # the most similar option text; on equal similarity the later option
        ratios = [difflib.SequenceMatcher(None, v.lower(), lower).ratio() for v in options.values()]
        best = max(i for i, r in enumerate(ratios) if r == max(ratios))
        return Extraction(list(options)[best], "huatuo_similar")

    def check_text(self, reply: str) -> str:
        return reply[-CHECK_TAIL:]

    def read_check(self, reply: str, options: dict[str, str]) -> str | None:
        return self.read(reply, options).letter


LADDER = Ladder()  # citrus's default reader
EXTRACTORS: dict[str, Extractor] = {
    "ladder": LADDER,
    "citrus": CitrusOriginal(),
    "huatuo": Huatuo(),
}
