"""Answer extraction: model output -> option letter, and the rule that found it.

A wrong letter is worse than none: a misread silently moves an accuracy, an unread reply is
counted (and can go to the LLM answer check). So every rule reads only what a careful reader
would, and a reply that names two options is `ambiguous`, not its first letter.

Before reading: Unicode NFKC (full-width Ｃ and （Ｃ） become C and (C)), accents, markdown
emphasis and LaTeX text wrappers dropped; a reasoning block (<think>...</think>, "## Thinking")
is skipped when an answer follows it, and a reply that runs on into a new "Question" is cut there.

The ladder, first reading wins:
  answer_tag   the last <answer>...</answer> (an unclosed tag runs to the end)
  boxed        the last \\boxed{...} (two boxes joined by "or": ambiguous)
  json         a JSON "answer" / "final_answer" / "choice" / "答案" field
  answer_is    the last answer phrase. Statements: "the answer is (C)", "Answer: C", "Final: C",
               "option C is correct", "I would choose C", "therefore C.", "答案是C", "故选C",
               "选项C正确", verdict tables ("| C | Correct |", "✅ C"). Descriptions count only
               where no statement is: "C is the most likely", "this is <text>", "points to
               option C", "<text> (C)" on a line of its own. A negated ("not A", "A is
               incorrect"), retracted ("C. Hmm, no") or conditional ("B would be correct if")
               letter is none; phrases that swing back to an option they left, name three
               options, or end on two answers with no correction between are ambiguous.
  bare_letter  the whole reply, or its last line, is a letter: "C", "(C).", "**C**"
  answer_line  the first or last line gives one option whole: "C. Aortic dissection", "✅ C.
               <C's text>" (an echo of several options is none)
  short_reply  a finished one-line reply read whole: "B) Pulmonary embolism", "Yes, but not
               always."
  conclusion   the last sentence ends on one option ("...: scarlet fever.", "— option A"), marks
               one ("... propofol (B).") or concludes ("so", "therefore", "most likely", "故")
               with one
  option_text  exactly one option's text in the sentences that say what the answer is ("most
               consistent with X"), leaving out texts negated or compared against ("not X",
               "rather than X", "X is unlikely")
  ambiguous    the deciding reading names two or more options ("(A) and (C)", "B or D")
  none         nothing to read; the prediction counts as wrong
The last four read only a reply that finished (not one cut by the token limit) and that does not
say it cannot decide.

An option's whole text is read before a leading letter, so `E. coli` is the option whose text it
is, not option E. Option texts match on word boundaries ("no" is not in "not"; a one-word text of
five letters or fewer, like yes/no/maybe, only before punctuation or the end), the longest text
wins ("interstitial cystitis" over "cystitis"), and a text also matches without its parenthesis,
as its parenthesis, with its genus abbreviated ("S. aureus") and as its initials ("ATN").
Every prediction stores its rule, so scores can be audited.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from dataclasses import dataclass

# Bump when a rule changes: scores from different versions differ, and the evaluation's resume
# stamp holds it, so a rerun re-reads nothing with an old extractor.
EXTRACTOR_VERSION = "3"

AMBIGUOUS = "ambiguous"
ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)
MARKDOWN = re.compile(r"\*\*|__|`+|^#+\s*|^>\s*|(?<![\w*])[*_](?=\S)|(?<=\S)[*_](?![\w*])", re.M)
LATEX_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textit|mathit)\s*\{([^{}]*)\}")
THINK_END = re.compile(r"</think>|^#*\s*final response\s*:?\s*$", re.I | re.M)
CONTINUATION = re.compile(r"\n\s*#*\s*(?:question|q)\s*\d*\s*(?:[:.]|\n)", re.I)  # a new item
JSON_FIELD = re.compile(
    r"""["'](?:final_answer|final answer|answer|answer_letter|answer_option|correct_option|"""
    r"""selected_option|option|choice|prediction|答案)["']\s*:\s*"""
    r"""(\[[^\]]*\]|"[^"]*"|'[^']*')""",
    re.I,
)
PRONOUN_VERBS = (
    "believe|think|would|will|am|feel|guess|suspect|have|can|must|should|know|choose|pick|"
    "select|go|need|see|agree|cannot|can't|don't|do|was|also|might|may|'m|'d|'ll|'ve|"
    "recommend|favor|favour|prefer|lean|suggest|say|chose|picked"
)
STOPWORDS = {"of", "the", "and", "with", "to", "in", "a", "an", "for", "on", "or", "by"}
NEGATION_BEFORE = re.compile(
    r"(?:\bnot|\bno|\bnor|\bisn't|\bisnt|\bexclude[sd]?|\brule[sd]?\s+out|\bruled\s+out|"
    r"\bunlikely|\bthan|\brather\s+than|\binstead\s+of|\bover|\bwithout|\bagainst|\bexcept|"
    r"\bavoid(?:s|ing)?|"
    r"不是|排除|而非)"
    r"(?:\s+(?:an?|the|a\s+diagnosis\s+of|option|choice))?\s*[:(]?\s*$",
    re.I,
)
NEGATION_AFTER = re.compile(
    r"^\s*\)?\s*(?:(?:and|or)\s+(?:[^.;:,]|\.(?=\s*[a-z])){1,40}?\s+)?"
    r"(?:is|are|was|seems|appears|would\s+be|can\s+be|could\s+be|has\s+been)?\s*(?:still\s+)?"
    r"(?:not\b|incorrect|wrong|unlikely|less\s+(?:likely|typical|common|appropriate)|excluded|"
    r"would\s+not\b|does\s+not\b|did\s+not\b|"
    r"ruled\s+out|contraindicated|inappropriate|would\s+have\b|"
    r"false|doesn't|does\s+not|can't|cannot|错误|不正确|不对|排除|不符合|不支持)",
    re.I,
)
# "a diagnosis", "to give an": never the letter A ("A — Metformin")
ARTICLE = re.compile(
    r"^(?:[Aa]n?|[Tt]he|[Tt]o\s+(?:perform|give|start|order)(?:\s+an?)?)\s+"
    r"(?=[a-z])(?!(?:and|or|nor|is|because|since|as|with|over|but)\b)"  # "A and C": letters
)
HEDGE = re.compile(
    r"\b(?:difficult|hard|impossible)\s+to\s+(?:say|tell|determine|decide)|cannot\s+(?:be\s+)?"
    r"(?:determined?|decided?|choose)|can't\s+(?:determine|decide|choose|tell)|"
    r"more\s+information\s+(?:is|would\s+be)\s+needed|insufficient\s+information|"
    r"cannot\s+be\s+distinguished|can't\s+be\s+distinguished|missing\s+(?:key\s+|some\s+)?"
    r"information|not\s+enough\s+information|could\s+be\s+argued|"
    r"(?:answer|choice|management|it)\s+(?:really\s+)?depends\s+(?:on|entirely)|取决于|"
    r"unable\s+to\s+(?:determine|choose|decide)|无法确定|不能确定|"
    r"\bor\s+(?:\w+\s+){0,2}depending\s+on\b|torn\s+between|none\s+of\s+the\s+(?:options|choices|answers)(?:\s+\w+)?"
    r"\s+(?:is|are)\s+(?:correct|right)|也可能是",
    re.I,
)
EITHER = re.compile(r"\beither\b[^.;\n]{1,80}?\bor\b|\bor\s+(?:possibly|perhaps|maybe)\b", re.I)
SPECIAL_TOKENS = re.compile(r"<\|[^|<>]{1,40}\|>(?:assistant|user|system)?|</?s>")
CORRECTION = re.compile(
    r"\b(?:wait|actually|correction|reconsider\w*|however|but|no\b|final\w*|chang\w*|instead|"
    r"second\s+thought|hmm|re-?read\w*|after|so|therefore|thus|hence|re-?check\w*|mistake|sorry|"
    r"on\s+review|then|better|rather|oops|mislabel\w*|i\s+meant)|不对|更正|所以|因此|故|综上|但",
    re.I,
)
# a reply turning back on the answer it gave ("The answer is B. Wait, actually ...")
RECONSIDER = re.compile(
    r"\b(?:wait|actually|hmm|hold\s+on|on\s+second\s+thought|let\s+me\s+reconsider)\b|不对|等等",
    re.I,
)
RETRACTION = re.compile(r"^[\s.,:;)\]-]*(?:hmm|wait|no\b|actually|let\s+me\s+reconsider)", re.I)
CONDITIONAL = re.compile(r"^[\s.,)\]]*(?:if|only\s+if|when|in\s+case)\b", re.I)
CONCLUSION_CUE = re.compile(
    r"\b(?:so|therefore|thus|hence|consequently|in\s+conclusion|in\s+summary|overall|"
    r"most\s+likely|final(?:ly)?|best\s+(?:answer|option|choice))\b|所以|因此|故|综上|最可能",
    re.I,
)
MENTION_CUE = re.compile(  # a sentence that says what the answer is, not one that lists
    r"\b(?:most\s+(?:likely|consistent|probable|appropriate)|consistent\s+with|diagnos[ie]s|"
    r"answer|therefore|thus|hence|so|suggest(?:s|ive)?|indicat\w*|points?\s+to|fits?|"
    r"best|likely|recommend\w*|choose|pick|treat\w*\s+with|due\s+to|is\s+(?:an?|the))\b"
    r"|=>|->|所以|因此|故|诊断|最可能|考虑",
    re.I,
)


CHINESE_VERDICTS = {"yes": "是的|是|对", "no": "不是|否|不", "maybe": "可能|也许|不确定"}


@dataclass(frozen=True)
class Extraction:
    letter: str | None
    rule: str


def normalize(text: str) -> str:
    """Full-width forms to ASCII, accents and zero-width marks dropped, LaTeX text wrappers
    unwrapped, markdown emphasis removed."""
    text = SPECIAL_TOKENS.sub("\n", unicodedata.normalize("NFKC", text).replace("\u200b", ""))
    text = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    text = unicodedata.normalize("NFC", text)
    for _ in range(2):  # \text{\textbf{C}}
        text = LATEX_WRAPPER.sub(r"\1", text)
    return MARKDOWN.sub("", text)


def _phrase_pattern(text: str) -> str:
    words = [re.escape(w) for w in text.replace("'s ", " ").split()]
    if len(words) > 1 and re.fullmatch(r"[A-Z][a-z]{2,}", words[0]) and words[1][:1].islower():
        words[0] = rf"(?:{words[0]}|{words[0][0]}\.)"  # "Staphylococcus aureus": "S. aureus"
    elif len(words) > 1 and re.fullmatch(r"[A-Z]\\\.", words[0]) and words[1][:1].islower():
        words[0] = rf"{words[0][0]}(?:\.|[a-z]{{3,}})"  # "L. monocytogenes": "Listeria m..."
    gap = r"(?:'s)?\s+(?:(?:a|an|the)\s+)?"  # "Crohn's disease", "atresia with a fistula"
    return gap.join(words)


def _text_pattern(text: str) -> str:
    """An option text as a regex: case-free, any whitespace, on ASCII word boundaries (so "no"
    is not found in "not", and Chinese texts match inside Chinese sentences); also without its
    parenthesis, as its parenthesis, and as its initials."""
    text = normalize(text).strip().rstrip(".")
    forms = [_phrase_pattern(text)]
    inner = re.fullmatch(r"(.+?)\s*\(([^()]{3,})\)", text)
    if inner:
        forms += [_phrase_pattern(inner.group(1)), _phrase_pattern(inner.group(2))]
    initials = [w[0] for w in re.split(r"[\s-]+", text) if w and w.lower() not in STOPWORDS]
    if len(initials) >= 3 and all(c.isalpha() for c in initials):
        forms.append("(?-i:" + "".join(initials).upper() + ")")  # "ATN", not "atn"
    after = r"(?![A-Za-z0-9])"
    if text.lower() in ("yes", "no", "maybe", "none", "true", "false", "both", "neither"):
        # "No doubt" is not "no", "yes or maybe" is not "yes"
        after = r"(?=\s*(?:[.,;:!?)\]\n—–-]|$|or\b|and\b|rather\b))"
    return r"(?<![A-Za-z0-9])(?:" + "|".join(forms) + ")" + after


class _Reader:
    """The options of one question, and the readings of a piece of text against them."""

    def __init__(self, options: dict[str, str]):
        self.options = options
        self.upper = "".join(k.upper() for k in options)
        # a one-letter text ("B") is read as a letter, never as option text
        texts = [(k, v) for k, v in options.items() if v.strip() and len(v.strip()) > 1]
        self.texts = sorted(texts, key=lambda kv: -len(kv[1]))
        self.text_res = {k: re.compile(_text_pattern(v), re.I) for k, v in self.texts}
        # each text as a reply would hold it whole (normalized, no final period, any case)
        self.plain = {k: normalize(v).strip().rstrip(".").lower() for k, v in self.texts}
        self.first_words = {
            k: re.compile(r"(?<![A-Za-z])" + re.escape(v.split()[0]), re.I)
            for k, v in self.plain.items()
            if len(v.split()[0]) >= 4
        }
        self.letter_token = rf"[\(\[{{<]?([{self.upper}{self.upper.lower()}])[\)\]}}>]?"

    # ------------------------------------------------------------ option texts

    def text_at_start(self, s: str) -> tuple[str | None, int]:
        """The option whose text begins `s` (the longest), and where its match ends."""
        for k, _ in self.texts:
            m = self.text_res[k].match(s)
            if m:
                return k, m.end()
        return None, 0

    def texts_in(self, s: str) -> set[str]:
        """Options whose texts appear in `s`, leaving out those inside a longer hit and those
        negated or compared against."""
        spans: list[tuple[int, int, str]] = []
        for k, _ in self.texts:
            for m in self.text_res[k].finditer(s):
                if any(a <= m.start() and m.end() <= b for a, b, _ in spans):
                    continue  # part of a longer option's text
                if NEGATION_BEFORE.search(s[max(0, m.start() - 40) : m.start()]):
                    continue
                if NEGATION_AFTER.match(s[m.end() : m.end() + 80]):
                    continue
                if re.search(r"\d\s*(?:to|-|–|or)\s*$", s[max(0, m.start() - 12) : m.start()]):
                    continue  # "5 to 10 seconds": a range, not the option "10 seconds"
                spans.append((m.start(), m.end(), k))
        return {k for _, _, k in spans}

    def mentioned(self, s: str) -> str | None:
        """The one option named in the sentences of `s` that say what the answer is."""
        hits: set[str] = set()
        for sentence in re.split(r"(?<=[.!?。;])\s+|\n+", s):
            if MENTION_CUE.search(sentence):
                hits |= self.texts_in(sentence)
        return hits.pop() if len(hits) == 1 else None

    # ------------------------------------------------------------ letters

    def letter_list(self, s: str) -> set[str] | None:
        """Two or more letters and nothing else: "A, C", "(A) and (C)", "B or D", "AC", "C和E"."""
        tok = self.letter_token
        sep = r"\s*(?:,|;|/|&|\+|and|or|\band/or|和|或|、|及|\s)\s*(?:option\s+)?"
        m = re.fullmatch(rf"(?:(?:both|either)\s+)?{tok}(?:{sep}{tok})+\s*[.!。]?", s, re.I)
        if m:
            found = re.findall(rf"(?<![A-Za-z]){tok}(?![A-Za-z])", s, re.I)
            return {x.upper() for x in found}
        if re.fullmatch(rf"[{self.upper}]{{2,}}[.!。]?", s) and len(set(s.rstrip(".!。"))) > 1:
            return set(s.rstrip(".!。"))
        return None

    def echoed(self, s: str) -> bool:
        """`s` gives two or more options each as "<letter>. <its text>": an echo of the options
        ("A. 阿托品 B. 碘解磷定 C. ..."), not an answer."""
        given = {
            k
            for k in self.text_res
            if re.search(rf"(?<![A-Za-z]){k}[.)]\s*{self.text_res[k].pattern}", s, re.I)
        }
        return len(given) > 1

    def lists_options(self, s: str) -> bool:
        """`s` opens with two or more lines that each start with a different option letter."""
        opened = []
        for line in s.strip().splitlines()[:4]:
            m = re.match(rf"\s*\(?([{self.upper}])[.):]", line)
            if not m:
                break
            opened.append(m.group(1))
        return len(set(opened)) > 1

    def leading_letter(self, s: str) -> tuple[str | None, int]:
        """A letter that opens `s` as an answer: "C", "(C)", "C.", "C)", "C:", "C -", "option C",
        "C because ...". Not "A 45-year-old", "I believe", "a difficult one", nor "E. coli"
        (a letter, a dot and a lower-case word is an abbreviation unless option E reads so)."""
        m = re.match(
            rf"(?:(?:option|choice|选项|选)\s*)?([\(\[{{<])?([{self.upper}{self.upper.lower()}])"
            r"([\)\]}>])?(?=(.{0,40}))",
            s,
            re.I | re.S,
        )
        if not m:
            return None, 0
        opened, letter, closed, after = m.group(1), m.group(2), m.group(3), m.group(4)
        key, end = letter.upper(), m.end()
        if key not in self.options:
            return None, 0
        if opened or closed:
            return key, end
        if re.match(r"\s*(?:$|[,;:!?。，；：、)\]\n]|[-–—]\s|项|選|选项|\.(?!\s*[a-z]))", after):
            return key, end
        if re.match(r"\.\s*[a-z]", after):  # "E. coli": an abbreviation, unless an option's text
            named, _ = self.text_at_start(s[end:].lstrip(". "))  # "B. dapsone" (a letter + a text)
            return (key, end) if named is not None else (None, 0)
        word = re.match(r"\s+([A-Za-z']+)", after)
        if word is None:
            return (key, end) if re.match(r"\s*[\u4e00-\u9fff(]", after) else (None, 0)
        if letter.islower():
            return None, 0  # "the answer is a difficult one"
        if key == "I" and re.fullmatch(PRONOUN_VERBS, word.group(1), re.I):
            return None, 0  # "I believe"
        if key == "A" and word.group(1)[:1].islower() and word.group(1).lower() not in (
            "because", "since", "as", "given", "due", "with", "is", "which", "and", "or",
        ):  # fmt: skip
            return None, 0  # "A patient", "A diagnosis"
        return key, end

    # ------------------------------------------------------------ what a phrase points at

    def read_target(self, s: str) -> str | None:
        """What an answer phrase points at: one option (by letter or whole text), AMBIGUOUS, or
        None. `s` is the text right after the phrase."""
        s = s.strip().strip(":=-–—*\"'").strip()
        s = re.sub(ARTICLE, "", s)
        if self.lists_options(s) or self.echoed(s.split("\n", 1)[0]):
            return AMBIGUOUS  # "The answer is:\nA. yes\nB. no\nC. maybe": the options echoed
        if negated := re.match(r"(?:not\b|isn't\b|不是|非)", s, re.I):
            s = s[negated.end() :]
            turn = re.search(
                r"(?:\bbut|\brather|\binstead|,\s*it'?s|而是|[,;]\s*是)\s*", s[:60], re.I
            )
            return self.read_target(s[turn.end() :]) if turn else None
        if listed := self.letter_list(re.split(r"[\n。]|\.\s", s, maxsplit=1)[0].strip()):
            return AMBIGUOUS if len(listed) > 1 else listed.pop()
        if said := self.chinese_verdict(s):
            return said
        key, end = self.text_at_start(s)
        if key is None:
            key, end = self.leading_letter(s)
        if key is None:  # "malrotation with volvulus (B)", "SIADH, choice B": a paraphrase
            marked = re.match(
                rf"[^.;:\n()]{{1,60}}?(?:\s\((?i:option\s+|choice\s+)?([{self.upper}])\)|"
                rf"[,—–-]\s*(?i:option|choice)\s+([{self.upper}])(?=\W|$))",
                s,
            )
            return (marked.group(1) or marked.group(2)) if marked else None
        rest = s[end:]
        own = re.match(r"[\s.:)\-–—]*", rest)
        if own and self.text_at_start(rest[own.end() :])[0] == key:  # "B. no": past its text
            rest = rest[own.end() + self.text_at_start(rest[own.end() :])[1] :]
        if NEGATION_AFTER.match(rest) or RETRACTION.match(rest) or CONDITIONAL.match(rest):
            return None  # "A is wrong", "E. Hmm, no", "B would be correct if ..."
        named, _ = self.text_at_start(rest.lstrip(" .:)-–—"))
        if named is not None and named != key:
            return AMBIGUOUS  # "C. <option D's text>": the letter and the text disagree
        other = re.match(r"\s*(?:,|or|and|/|和|或)\s*(?:option\s+)?", rest, re.I)
        if other:
            tail = rest[other.end() :]
            second, _ = self.text_at_start(tail)
            if second is None:
                second, _ = self.leading_letter(tail)
            if second is None:
                second = next((k for k, r in self.first_words.items() if r.match(tail)), None)
            if second is not None and second != key:
                return AMBIGUOUS  # "E. coli or Klebsiella"
        return key

    def chinese_verdict(self, s: str) -> str | None:
        """ "是。" / "否，" / "可能" opening an answer to a yes / no / maybe question (PubMedQA)."""
        for key, text in self.plain.items():
            words = CHINESE_VERDICTS.get(text)
            if words and re.match(rf"(?:{words})(?=[。，,.!！;；\s]|$)", s):
                return key
        return None

    def read_slot(self, s: str) -> str | None:
        """A place that holds the answer and little else (an <answer> tag, a box, a JSON field,
        a one-line reply): its whole text, a letter, an answer phrase inside it, then the one
        option it names."""
        s = s.strip().strip("*\"'` ")
        if not s:
            return None
        plain = s.rstrip(" .!。")
        if self.echoed(s):
            return AMBIGUOUS
        for k, _ in self.texts:
            if plain.lower() == self.plain[k]:
                return k
        if listed := self.letter_list(plain):
            return AMBIGUOUS if len(listed) > 1 else listed.pop()
        found = self.answer_phrase(s)
        if found is None and self.opens_with_answer(s):
            found = self.read_target(s)
        if found is not None:
            return found
        return self.single_text(s)

    def opens_with_answer(self, s: str) -> bool:
        """`s` opens with an option (letter or text) followed by a pause: "B. no\n...",
        "Yes, but ...", "C) Aortic dissection", not "N. meningitidis would be expected ..."."""
        key, end = self.text_at_start(s)
        if key is None:
            key, end = self.leading_letter(s)
        return key is not None and bool(re.match(r"\s*(?:$|[,.;:!?\n)\]—–-]|\(|\s[A-Z])", s[end:]))

    def answer_line(self, lines: list[str]) -> str | None:
        """The first or last line is one option given whole, "C. Aortic dissection", "✅ C.
        <C's text>", "Option B — <B's text>", and no other line gives another option so (an
        echo of the options is no answer)."""
        whole: dict[int, str] = {}
        for i, line in enumerate(lines):
            core = re.sub(r"^[^\w(\[]+|[^\w)\]]+$", "", line)  # markers: "✅ ", "➡️ ", "- "
            key, end = self.leading_letter(core)
            if key is None:
                continue
            rest = re.sub(r"^[\s.:)\]—–-]+", "", core[end:])
            if self.text_key(rest.rstrip(" .")) == key:
                whole[i] = key
        if len(set(whole.values())) > 1:
            return None
        if whole:
            key = next(iter(whole.values()))
            return key if {0, len(lines) - 1} & set(whole) else None
        # "c) niacin. Niacin deficiency causes ...": opens with a letter and its own text
        if lines and self.echoed(lines[0]):
            return None
        key, end = self.leading_letter(lines[0]) if lines else (None, 0)
        rest = re.sub(r"^[\s.:)\]—–-]+", "", lines[0][end:]) if key else ""
        opened, _ = self.text_at_start(rest)
        return key if key is not None and opened == key and len(lines) < 4 else None

    def negated_letters(self, s: str) -> set[str]:
        """Options a text rules out by letter: "Option C is incorrect", "not A", "A is wrong"."""
        tok = rf"(?:option\s+|choice\s+)?[\(\[]?([{self.upper}])[\)\]]?"
        out = re.findall(
            rf"(?<![A-Za-z]){tok}(?=\s*(?:is|are|seems)?\s*(?:not\b|incorrect|wrong|"
            r"unlikely|false|ruled\s+out|excluded))",
            s,
            re.I,
        )
        out += re.findall(rf"\bnot\s+{tok}(?![\w-])", s, re.I)
        return {x.upper() for x in out if x.isupper() or len(x) == 1}

    def single_text(self, s: str) -> str | None:
        if EITHER.search(s):
            return None  # "either acute pericarditis or an evolving infarction"
        # "subacute granulomatous (de Quervain) thyroiditis": try again without asides
        hits = self.texts_in(s) or self.texts_in(re.sub(r"\s*\([^()]{1,40}\)", "", s))
        hits -= self.negated_letters(s)
        for k in hits:  # "E. coli or Klebsiella": a hedge
            if any(
                re.match(r"\s*,?\s*(?:or|and/or)\b", s[m.end() :])
                for m in self.text_res[k].finditer(s)
            ):
                return None
        return hits.pop() if len(hits) == 1 else None

    # ------------------------------------------------------------ phrases in running text

    def answer_phrase(self, text: str) -> str | None:
        """The reading of the last answer phrase in `text`. Statements of the answer ("the
        answer is C", "C is correct", labels) outrank descriptions ("C is the most likely",
        "this is X", "points to option C"), which count only where no statement is. AMBIGUOUS
        when the phrases swing back to an option they had left, name three or more (a model
        cycling through options), or end on two different answers with no correction between."""
        (strong_forward, weak_forward), (strong_backward, weak_backward) = self.phrases
        for forward, backward in ((strong_forward, strong_backward), (weak_forward, weak_backward)):
            found: list[tuple[int, int, str]] = []
            for pattern in forward:
                for m in pattern.finditer(text):
                    clause = re.split(r"[.!?;\n。；]", text[max(0, m.start() - 120) : m.start()])[
                        -1
                    ]
                    if re.search(r"\b(?:if|when|unless|depending)\b|如果|若", clause, re.I):
                        continue  # "If the Wells score is low, the next step is (A); if ..."
                    got = self.read_target(text[m.end() : m.end() + 200])
                    if got is not None:
                        found.append((m.start(), m.end(), got))
            for pattern in backward:
                for m in pattern.finditer(text):
                    key = m.group("letter")
                    key = key.upper() if len(key) == 1 else self.text_key(key)
                    if key in self.options and not NEGATION_BEFORE.search(
                        text[max(0, m.start() - 20) : m.start()]
                    ):
                        found.append((m.start(), m.end(), key))
            if found:
                tail = text[max(end for _, end, _ in found) :]
                turn = RECONSIDER.search(tail)
                if turn and HEDGE.search(tail[turn.end() :]):
                    return None  # "... the answer is B. Wait, ... I'm torn between C and E"
                return self.settle(sorted(found), text)
        return None

    @staticmethod
    def settle(found: list[tuple[int, int, str]], text: str) -> str:
        readings = [got for _, _, got in found]
        swings = [r for i, r in enumerate(readings) if i == 0 or r != readings[i - 1]]
        if len(swings) != len(set(swings)) or len(set(readings) - {AMBIGUOUS}) >= 3:
            return AMBIGUOUS
        changed = [i for i in range(1, len(found)) if readings[i] != readings[i - 1]]
        if changed:  # "Answer: A\nAnswer: C": a second answer without a correction is a second
            i = changed[-1]
            between = text[found[i - 1][1] : found[i][1]]  # the later phrase's words count
            if len(between) < 200 and not CORRECTION.search(between):
                return AMBIGUOUS
        return readings[-1]

    @functools.cached_property
    def phrases(self) -> tuple[tuple[list, list], tuple[list, list]]:
        return self.forward_phrases(), self.backward_phrases()

    def letter_alone(self, s: str) -> str | None:
        s = re.sub(r"^(?:option|choice)\s+(?=\S+$)", "", s.strip(), flags=re.I)
        m = re.fullmatch(self.letter_token, s, re.I)
        return m.group(1).upper() if m and (s.strip().isupper() or s.strip()[0] in "([{<") else None

    def text_key(self, text: str) -> str | None:
        key, end = self.text_at_start(text)
        return key if end == len(text) else None

    def forward_phrases(self) -> tuple[list[re.Pattern], list[re.Pattern]]:
        """Phrases followed by what they point at: statements of the answer, descriptions."""
        filler = (
            r"(?:\s+here|\s+overall|\s*,?\s*(?:I|we)\s+(?:believe|think|feel|guess|would\s+say|"
            r"suspect)\s*,?)?"
        )
        verb = (
            r"(?:\s+(?:is|are|was|would\s+be|should\s+be|will\s+be|must\s+be|seems\s+to\s+be|"
            r"appears\s+to\s+be|is\s+likely|stays|remains)\b\s*:?|\s*[:=]|\s+[-–—])"
        )
        noun = (
            r"\b(?:(?:final|correct|right|best|most\s+(?:likely|appropriate)|my(?:\s+final)?)\s+)*"
            r"(?:answer|option|choice|diagnosis|response|(?:right|correct|best)\s+one)s?"
            r"(?:\s+(?:to|for)\s+(?:the|this)\s+question(?:\s+\"[^\"\n]{0,400}\")?)?"
        )
        letter_ends = r"(?=\s*(?:option\s+|choice\s+)?[\(\[]?[A-Z][\)\]]?\s*(?:[.,;:!]|$))"
        statements = [
            re.compile(noun + filler + verb, re.I),
            re.compile(  # "The next best step (in management) is"
                r"\b(?:next\s+)?(?:best\s+)?(?:next\s+)?(?:step|treatment|management|test|drug)"
                r"(?:\s+in\s+(?:the\s+)?(?:management|diagnosis|treatment|evaluation))?"
                r"\s+(?:is|would\s+be)\s*:?",
                re.I,
            ),
            re.compile(r"\beither\b(?=\s*(?:option\s+)?[\(\[]?[A-Z][\)\]]?\s+or\b)", re.I),
            re.compile(
                r"\b(?:I\s+would|I'd|I\s+will|I'll|I|we\s+would|let's|let\s+us|I'm|I\s+am)\s+"
                r"(?:choose|pick|select|go\s+(?:with|for)|opt\s+for|answer|"
                r"lean\s+(?:toward|towards|to)|say|picking|choosing|selecting|going\s+with)\b",
                re.I,
            ),
            re.compile(  # "The option that is NOT an adverse effect of lithium is"
                r"\b(?:option|answer|choice)\s+(?:that|which)\s+[^.\n]{0,80}?\s+(?:is|would\s+be)\s+",
                re.I,
            ),
            re.compile(r"\bchang(?:e|ing)\s+(?:it|my\s+answer)\s+to\b", re.I),
            re.compile(  # labels: "Final: D", "Correction: B", "In summary: option B", "=> X"
                r"(?:\b(?:final|correction|corrected|verdict|correct|in\s+summary|decision|"
                r"in\s+conclusion|to\s+summari[sz]e|conclusion|therefore|thus|hence|so)\s*[:：]"
                r"|=>|->|→|➡)"
                r"|^\s*(?:final\s+)?answer\s*$",  # a heading: "### Answer\n**(B)**"
                re.I | re.M,
            ),
            re.compile(r"\b(?i:therefore|thus|hence|so)\s*,?" + letter_ends),
            re.compile(  # after NFKC ":" and "," stand for their full-width forms
                r"(?:(?:正确)?(?:答案|诊断|最终答案)|正确选项|选项应)\s*(?:应该?|应当)?\s*(?:是|为|选|:)+"
                r"(?![。,.!;])"  # "答案:是。": the 是 is the answer (yes)
                r"|【(?:正确)?答案】|(?:故|应|我认为|所以|因此|本题)?(?<!首)选(?:择)?|而是|,\s*是|即"
                r"|(?:^|\n)\s*答\s*:"
            ),
        ]
        descriptions = [
            re.compile(  # "the most likely cause of his dyspnea is (likely to be)"
                r"\bmost\s+(?:likely|appropriate|probable)\s+(?:[\w'-]+\s+){0,12}?"
                r"(?:is|would\s+be)\s+(?:likely\s+to\s+be\s+|probably\s+|indeed\s+)?",
                re.I,
            ),
            re.compile(r"\b(?:this|that|it)\s+(?:is|'s)\s+(?:most\s+likely\s+|probably\s+)?", re.I),
            re.compile(r"\bmost\s+likely\s*:|\bcorrespond(?:s|ing)?\s+to\b", re.I),
            re.compile(r"最(?:常见|可能|合适|主要|适宜)的?[\u4e00-\u9fff]{0,8}?(?:是|为)"),
            re.compile(
                r"\b(?:point(?:s|ing)?\s+(?:clearly\s+|strongly\s+)?to|favou?rs?|favou?ring|"
                r"leaves?|leaving)\s+(?=(?:option|choice)\s|[\(\[]?[A-Z][.)\]]\s)|"
                r"\bpoint(?:s|ing)?\s+(?:clearly\s+|strongly\s+)?to\b|"
                r"\b(?i:favou?rs?|that's|it's|it\s+is|most\s+likely|leaves|leaving|probably|likely)"
                r"\s*,?" + letter_ends
            ),
        ]
        return statements, descriptions

    def backward_phrases(self) -> tuple[list[re.Pattern], list[re.Pattern]]:
        """Phrases that follow what they point at: statements ("C is correct"), descriptions
        ("C is the most likely", a line "<text>, C.")."""
        tok = rf"(?:option\s+|choice\s+|选项)?[\(\[]?(?P<letter>[{self.upper}])[\)\]]?"
        texts = "|".join(_text_pattern(v) for _, v in self.texts) or "(?!)"
        correct = (
            r"\s+(?:is|seems)\s+(?:the\s+)?(?:correct|right|best|better|answer)"
            r"(?:\s+(?:answer|option|choice))?\b"
        )
        likely = r"\s+(?:is|seems)\s+(?:the\s+)?most\s+(?:likely|appropriate|probable)\b"
        # "A is the most likely" states the answer; "... (A) is the most common" describes one
        bare = rf"(?:option\s+|choice\s+)?(?P<letter>(?-i:[{self.upper}]))"
        out = [
            re.compile(rf"(?<![A-Za-z]){tok}{correct}", re.I),
            re.compile(rf"(?<![\w(\[]){bare}{likely}", re.I),
            re.compile(  # verdicts: "| A | Correct |", "- C: ✅", "C. ... <-- correct"
                rf"^[\s|*-]*{tok}[\s.:|)-]*(?:[^\n]*?(?:<-+|←|\(|\s[-–—:]|:))?\s*"
                r"(?<!in)(?:correct|right|true|✅|✓|✔)\)?[\s|]*$",
                re.I | re.M,
            ),
            re.compile(rf"{tok}[\u4e00-\u9fff]{{0,12}}?(?<!不)(?:正确|是正确的|为正确答案)"),
            re.compile(  # "which makes C the best choice"
                rf"\bmak(?:es?|ing)\s+{tok}\s+(?:the\s+)?(?:best|correct|right)\b", re.I
            ),
            re.compile(rf"^[\s|*-]*(?:✅|✓|✔|☑)\s*{tok}(?![\w-])", re.M),  # "✅ B"
            re.compile(rf"(?P<letter>{texts}){correct}", re.I),
        ]
        out.append(  # a table row: "| Most likely diagnosis | C |"
            re.compile(
                rf"^\|[^\n]*(?:answer|diagnosis|choice)[^\n]*\|\s*{tok}\s*\|\s*$", re.I | re.M
            )
        )
        weak = [
            re.compile(rf"(?<![A-Za-z]){tok}{likely}", re.I),
            re.compile(rf"(?P<letter>{texts}){likely}", re.I),
        ]
        for k, v in self.texts:  # a line of its own: "Croup (A)", "Stevens-Johnson syndrome, D."
            weak.append(
                re.compile(
                    rf"^\W*{_text_pattern(v)}\s*(?:,|\(|-|–)\s*(?:option\s+)?(?P<letter>{k})\b"
                    r"\)?\W*$",
                    re.I | re.M,
                )
            )
        return out, weak

    # ------------------------------------------------------------ the last sentence

    def conclusion(self, text: str) -> str | None:
        """The option the last sentence concludes with, unless the reply's other conclusions
        name other options (a small model that "concludes" each option in turn)."""
        sentences = [s for s in re.split(r"(?<=[.!?。])\s+(?=[A-Z(])|\n+", text) if s.strip()]
        if not sentences:
            return None
        last = sentences[-1].strip().rstrip(".!。")
        # "...: scarlet fever." / "... to act. Terbutaline." / "Start the insulin drip — option A."
        tail = re.split(r":|\s[—–-]\s", last)[-1].strip()
        tail = re.sub(ARTICLE, "", tail)
        listing = re.compile(r"^\s*(?:\(?[A-Za-z]\)?|\d+)[.)]\s", re.M)  # "E. Tension ...", "4. X"
        if (
            len(listing.findall(text)) < 2
            and len(tail) <= 60
            and (self.text_key(tail) or self.letter_alone(tail))
        ):
            return self.text_key(tail) or self.letter_alone(tail)
        if found := self.marked(sentences[-1]):
            return found
        if not CONCLUSION_CUE.search(sentences[-1]):
            return None
        concluded = {self.concluded(s) for s in sentences if CONCLUSION_CUE.search(s)} - {None}
        last = self.concluded(sentences[-1])
        return last if concluded == {last} else None

    def concluded(self, sentence: str) -> str | None:
        marked = {x.upper() for x in re.findall(rf"\(([{self.upper}])\)", sentence)}
        if len(marked) == 1:
            return marked.pop()
        return self.single_text(sentence)

    def marked(self, sentence: str) -> str | None:
        """The one letter marked in a sentence, "... propofol (B).", "(option A)", unless it is
        negated or conditional ("Duodenal atresia (C) would have presented ...")."""
        marks = list(re.finditer(rf"\((?:option\s+|choice\s+)?([{self.upper}])\)", sentence, re.I))
        if len({m.group(1).upper() for m in marks}) != 1:
            return None
        after = sentence[marks[-1].end() :]
        if NEGATION_AFTER.match(after) or CONDITIONAL.match(after):
            return None
        return marks[-1].group(1).upper()


def _boxed(text: str) -> list[tuple[int, str]]:
    """Each \\boxed{...} of `text` (nested braces allowed) with where it starts."""
    out = []
    for m in re.finditer(r"\\boxed\s*\{", text):
        depth, i = 1, m.end()
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                out.append((m.start(), text[i:j]))
                break
        else:
            out.append((m.start(), text[i:]))
    return out


def _last_boxed(text: str) -> str | None:
    boxes = _boxed(text)
    if not boxes:
        return None
    if len(boxes) > 1:  # "\boxed{A} or \boxed{C}"
        (_, first), (start, last) = boxes[-2], boxes[-1]
        between = text[text.rfind("}", 0, start) + 1 : start]
        if first.strip() != last.strip() and re.fullmatch(r"[\s$]*(?:or|and|,|/)[\s$]*", between):
            return f"{first} or {last}"
    return boxes[-1][1]


def _json_answer(text: str) -> str | None:
    fields = JSON_FIELD.findall(text)
    if not fields:
        return None
    value = fields[-1]
    if value.startswith("["):
        try:
            items = json.loads(value.replace("'", '"'))
        except json.JSONDecodeError:
            return value
        return ", ".join(map(str, items))
    return value[1:-1]


def _body(text: str) -> str:
    """The part of a reply that answers: after a closed reasoning block, before a new question."""
    ends = list(THINK_END.finditer(text))
    if ends and text[ends[-1].end() :].strip():
        text = text[ends[-1].end() :]
    cut = CONTINUATION.search(text)
    if cut and text[: cut.start()].strip():
        text = text[: cut.start()]
    return text


def _result(found: str | None, rule: str) -> Extraction | None:
    if found is None:
        return None
    return Extraction(None, AMBIGUOUS) if found == AMBIGUOUS else Extraction(found, rule)


@functools.lru_cache(maxsize=256)
def _reader(options: tuple[tuple[str, str], ...]) -> _Reader:
    return _Reader(dict(options))  # one per question: its patterns compile once


def extract_answer(response: str, options: dict[str, str]) -> Extraction:
    reader = _reader(tuple(options.items()))
    text = normalize(response)
    if re.search(r"<think>", text, re.I) and not re.search(r"</think>|<answer>", text, re.I):
        return Extraction(None, "none")  # cut off while still thinking: it never answered
    tags = ANSWER_TAG.findall(text)
    body = _body(ANSWER_TAG.sub(" ", text) if tags else text)
    slots = [
        ("answer_tag", tags[-1] if tags else None),
        ("boxed", _last_boxed(body)),
        ("json", _json_answer(body)),
    ]
    for rule, slot in slots:
        if slot is not None and (got := _result(reader.read_slot(slot), rule)):
            return got
    if got := _result(reader.answer_phrase(body), "answer_is"):
        return got
    lines = [line.strip() for line in body.strip().splitlines() if line.strip()]
    # the whole reply, its last line, or its first line when no other line opens with a letter
    # ("B\n\nExplanation: ...", not a list "A\nB\nC")
    lettered = [ln for ln in lines[1:] if re.match(rf"{reader.letter_token}(?:[.):\s]|$)", ln)]
    first = lines[0] if len(lines) > 1 and not lettered else ""
    for candidate in (" ".join(lines), lines[-1] if lines else "", first):
        if re.fullmatch(rf"{reader.letter_token}[.!。]?", candidate, re.I):
            return Extraction(reader.leading_letter(candidate)[0], "bare_letter")
        if listed := reader.letter_list(candidate):
            return _result(AMBIGUOUS if len(listed) > 1 else listed.pop(), "bare_letter")
    if tags:  # the reply answered in a tag that names nothing: its reasoning is no answer
        return Extraction(None, "none")
    if got := _result(reader.answer_line(lines), "answer_line"):
        return got
    # the weaker rules below read only a reply that finished (not one cut by the token limit)
    ends = re.search(r"(?:[.!?。)\]]|(?<![A-Za-z])[A-Z])\s*$", body)  # "...: exogenous. F"
    if not (ends or len(body.strip()) <= 80) or HEDGE.search(body):
        return Extraction(None, "none")
    if len(lines) == 1 and (got := _result(reader.read_slot(lines[0]), "short_reply")):
        return got
    if got := _result(reader.conclusion(body), "conclusion"):
        return got
    if found := reader.mentioned(body):
        return Extraction(found, "option_text")
    return Extraction(None, "none")
