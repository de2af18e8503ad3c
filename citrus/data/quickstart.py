"""Quickstart data: clinical-vignette multiple-choice questions from a small knowledge table.

Each vignette shows a patient (age, sex) with three symptoms, one examination sign and one lab
result of a disease; the options are that disease and others from the same organ system, so
the options form a real differential. Every item carries an expert-style reasoning trace
(findings -> differential -> elimination -> answer) in `<think>...</think><answer>...</answer>`
form, which is what the quickstart SFT stage learns to write.

Splits are disjoint by construction: a vignette's clinical content (disease, symptoms, sign,
lab) hashes into train or test, whatever the seed or sizes. The generator is deterministic per
(seed, split, n). The table is a teaching toy, simplified on purpose: it lets the whole pipeline
run on a laptop and is no substitute for the real benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from citrus.data.schema import LETTERS, MCQuestion, write_jsonl_atomic
from citrus.prompts import build_messages


@dataclass(frozen=True)
class Disease:
    name: str
    system: str
    ages: tuple[int, int]
    sex: str  # "any" | "female" | "male"
    symptoms: tuple[str, ...]
    signs: tuple[str, ...]
    labs: tuple[str, ...]


def _load_diseases() -> tuple[Disease, ...]:
    """The knowledge table, quickstart_diseases.json: name, organ system, age range, sex, and the
    symptoms, signs and labs a vignette draws from (order matters: generation is seeded)."""
    rows = json.loads((Path(__file__).with_name("quickstart_diseases.json")).read_text("utf-8"))
    return tuple(
        Disease(**{k: tuple(v) if isinstance(v, list) else v for k, v in row.items()})
        for row in rows
    )


DISEASES = _load_diseases()

SYSTEMS = sorted({d.system for d in DISEASES})
TEMPLATES = (
    "A {age}-year-old {sex} presents with {s1}, {s2} and {s3} for {duration}. "
    "Examination shows {sign}. Laboratory and imaging studies show {lab}. "
    "Which of the following is the most likely diagnosis?",
    "A {age}-year-old {sex} comes to the emergency department with {duration} of {s1}, {s2} "
    "and {s3}. On examination there is {sign}. Workup shows {lab}. "
    "What is the most likely diagnosis?",
    "A {sex} aged {age} reports {s1}, {s2} and {s3} over the past {duration}. "
    "Physical examination reveals {sign}, and studies reveal {lab}. "
    "Which diagnosis best explains this presentation?",
)
DURATIONS = ("6 hours", "1 day", "2 days", "3 days", "1 week", "2 weeks")
TEST_BUCKETS = 1  # content hashes fall in 5 buckets; this many go to test (20%)


def _findings(d: Disease) -> set[str]:
    return set(d.symptoms) | set(d.signs) | set(d.labs)


def _content_split(disease: Disease, symptoms: tuple[str, ...], sign: str, lab: str) -> str:
    key = "|".join((disease.name, *sorted(symptoms), sign, lab)).encode()
    return "test" if int(hashlib.md5(key).hexdigest(), 16) % 5 < TEST_BUCKETS else "train"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def reasoning_trace(
    shown: list[str], options: dict[str, Disease], answer: str, patient: str
) -> str:
    """Findings -> differential -> elimination -> answer, as a clinician would write it.

    Options are restated one per line exactly as the question shows them ("C. name"), so each
    later reference to an option repeats the tokens of the question."""
    lines = [f"Key findings: {patient}; " + "; ".join(shown) + ".", "Differential:"]
    lines += [f"{letter}. {d.name}" for letter, d in options.items()]
    lines.append("Elimination:")
    for letter, d in options.items():
        if letter == answer:
            lines.append(f"{letter}. {d.name} explains {_join(shown)}.")
        else:
            # the true disease explains everything; a wrong trace that rejects it has to misread
            # a finding
            unexplained = [f for f in shown if f not in _findings(d)] or shown[-1:]
            typical = [d.symptoms[0], d.signs[0]]
            lines.append(
                f"{letter}. {d.name} would show {_join(typical)}; "
                f"it does not explain {_join(unexplained[:2])}."
            )
    winner = f"{answer}. {options[answer].name}"
    lines.append(f"Conclusion: {winner} accounts for all the findings.")
    return "<think>\n" + "\n".join(lines) + f"\n</think>\n<answer>{winner}</answer>"


def _one_vignette(rng: random.Random, split: str, n_options: int) -> MCQuestion | None:
    disease = rng.choice(DISEASES)
    symptoms = tuple(rng.sample(disease.symptoms, 3))
    sign, lab = rng.choice(disease.signs), rng.choice(disease.labs)
    if _content_split(disease, symptoms, sign, lab) != split:
        return None
    sex = disease.sex if disease.sex != "any" else rng.choice(("female", "male"))
    age = rng.randint(*disease.ages)
    person = {"female": "woman" if age >= 18 else "girl", "male": "man" if age >= 18 else "boy"}[
        sex
    ]
    text = rng.choice(TEMPLATES).format(
        age=age,
        sex=person,
        s1=symptoms[0],
        s2=symptoms[1],
        s3=symptoms[2],
        duration=rng.choice(DURATIONS),
        sign=sign,
        lab=lab,
    )
    same_system = [d for d in DISEASES if d.system == disease.system and d is not disease]
    others = rng.sample(same_system, min(n_options - 1, len(same_system)))
    if len(others) < n_options - 1:  # widen the differential beyond the organ system
        rest = [d for d in DISEASES if d is not disease and d not in others]
        others += rng.sample(rest, n_options - 1 - len(others))
    choices = others + [disease]
    rng.shuffle(choices)
    options = dict(zip(LETTERS, choices))
    answer = LETTERS[choices.index(disease)]
    shown = list(symptoms) + [sign, lab]
    content = "|".join((disease.name, *sorted(symptoms), sign, lab))
    return MCQuestion(
        id="",
        benchmark="quickstart",
        question=text,
        options={k: d.name for k, d in options.items()},
        answer=answer,
        metadata={
            "split": split,
            "system": disease.system,
            "content_key": hashlib.md5(content.encode()).hexdigest()[:12],
            "reasoning": reasoning_trace(shown, options, answer, f"{age}-year-old {person}"),
            # the same reasoning argued to the next option's disease: a confident wrong answer
            "wrong_reasoning": reasoning_trace(
                shown,
                options,
                LETTERS[(LETTERS.index(answer) + 1) % len(options)],
                f"{age}-year-old {person}",
            ),
        },
    )


def generate(split: str, n: int, seed: int = 0, n_options: int = 4) -> list[MCQuestion]:
    """`n` vignettes of `split` ("train" or "test"), deterministic per (split, n, seed).

    Test items have distinct clinical content; train items may repeat content with another
    patient, wording or option order, as real question banks do."""
    if split not in ("train", "test"):
        raise ValueError(f"quickstart split must be 'train' or 'test', got {split!r}")
    if not 2 <= n_options <= 6:
        raise ValueError(f"quickstart n_options must be between 2 and 6, got {n_options}")
    rng = random.Random(f"citrus-quickstart:{seed}:{split}")
    items: list[MCQuestion] = []
    seen: set[str] = set()
    for _ in range(200 * n + 1000):
        if len(items) == n:
            break
        q = _one_vignette(rng, split, n_options)
        if q is None or (split == "test" and q.metadata["content_key"] in seen):
            continue
        seen.add(q.metadata["content_key"])
        q.id = f"quickstart-{split}-{seed}-{len(items):05d}"
        items.append(q)
    if len(items) < n:
        raise ValueError(
            f"quickstart {split} split holds {len(items)} distinct vignettes; asked for {n}"
        )
    return items


def content_pool_size(split: str) -> int:
    """How many distinct clinical contents the split can draw from."""
    return sum(
        _content_split(d, s, sign, lab) == split
        for d in DISEASES
        for s in combinations(d.symptoms, 3)
        for sign in d.signs
        for lab in d.labs
    )


def to_sft_record(q: MCQuestion, prompt: str) -> dict:
    return {
        "id": q.id,
        "messages": build_messages(q, prompt)
        + [{"role": "assistant", "content": q.metadata["reasoning"]}],
    }


def to_preference_record(q: MCQuestion, prompt: str) -> dict:
    """Chosen: the trace to the right answer; rejected: the same reasoning bent to a wrong one."""
    return {
        "id": q.id,
        "messages": build_messages(q, prompt),
        "chosen": q.metadata["reasoning"],
        "rejected": q.metadata["wrong_reasoning"],
    }


def to_prompt_record(q: MCQuestion, prompt: str) -> dict:
    """The question asked, for online RL: completions are scored against its gold letter."""
    question = {**q.to_dict(), "metadata": {}}  # not the traces: the policy writes its own
    return {"id": q.id, "messages": build_messages(q, prompt), "question": question}


RECORD_MAKERS = {
    "sft": to_sft_record,
    "preference": to_preference_record,
    "prompt": to_prompt_record,
}


def write_train_split(
    out_dir: str | Path, seed: int, n: int, n_options: int, prompt: str, format: str = "sft"
) -> Path:
    """The training records (`format` sft, preference or prompt) of the train split as JSONL, reused
    when already generated."""
    path = Path(out_dir) / f"quickstart-seed{seed}-n{n}-o{n_options}-{prompt}.{format}.jsonl"
    if not path.is_file():
        items = generate("train", n, seed, n_options)
        write_jsonl_atomic(path, (RECORD_MAKERS[format](q, prompt) for q in items))
    return path
