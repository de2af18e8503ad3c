"""Published record layouts -> citrus's schemas, for datasets loaded with `datasets`.

Released data comes in whatever layout its authors chose: the Citrus repo's training examples are
`{"input", "target"}` and `{"chosen": [messages], "rejected": [messages]}`, its unified benchmark
files `{"id", "Q", "A", "OP"}`, hub datasets often `messages`, ShareGPT `conversations` or Alpaca
`instruction/output`. Each converter recognises a layout by its keys, so one config works for any
of them; a record in no known layout fails with its keys and the layouts that were tried.
Converters raise DataError without a location: the caller names the file and record.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from citrus.data.schema import (
    LETTERS,
    DataError,
    MCQuestion,
    validate_preference_record,
    validate_sft_record,
)

SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}


def hub_file(repo: str, filename: str | None, revision: str | None = None) -> Path:
    """A file of a hub dataset, downloaded once into the Hugging Face cache: from here on, released
    data is a local file like any other (its md5 goes in run.json)."""
    if not filename:
        raise DataError(
            f"{repo}: name the file of the dataset to read (data.hub.data_files / the task's file)"
        )
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, repo_type="dataset", revision=revision))
    except (
        Exception
    ) as e:  # offline, no such repo or file, no access: huggingface_hub raises many kinds
        raise DataError(
            f"{repo}/{filename}@{revision or 'main'}: could not be downloaded "
            f"({type(e).__name__}: {e}); "
            "download it once and point at the local copy"
        ) from None


def load_rows(path: Path) -> list[dict]:
    """Rows of a local JSON/JSONL/Parquet file, read with `datasets` (which fills a key a row lacks
    with None)."""
    import datasets  # heavy import, only for jobs that read released data

    builder = "parquet" if path.suffix == ".parquet" else "json"
    try:
        return list(datasets.load_dataset(builder, data_files=str(path), split="train"))
    except Exception as e:  # datasets raises many kinds (schema cast, bad JSON)
        raise DataError(
            f"{path}: could not be loaded with datasets: {type(e).__name__}: {e}"
        ) from None


def _messages(turns: Any, what: str = "messages") -> list[dict]:
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise DataError(f"{what}: expected a list of messages")
    if turns and "from" in turns[0]:  # ShareGPT
        unknown = {t.get("from") for t in turns} - set(SHAREGPT_ROLES)
        if unknown:
            raise DataError(f"{what}: unknown ShareGPT speaker(s) {sorted(map(str, unknown))}")
        return [{"role": SHAREGPT_ROLES[t["from"]], "content": t.get("value")} for t in turns]
    return [{"role": t.get("role"), "content": t.get("content")} for t in turns]


def _prompt_messages(prompt: Any, system: Any) -> list[dict]:
    head = [{"role": "system", "content": system}] if system else []
    if isinstance(prompt, str):
        return [*head, {"role": "user", "content": prompt}]
    return [*head, *_messages(prompt, "prompt")]


# ---------------------------------------------------------------- training records

SFT_LAYOUTS: dict[str, Callable[[dict], list[dict]]] = {
    "messages": lambda r: _messages(r["messages"]),
    "conversations": lambda r: _messages(r["conversations"], "conversations"),
    "input+target": lambda r: [
        *_prompt_messages(r["input"], r.get("system")),
        {"role": "assistant", "content": r["target"]},
    ],
    "instruction+output": lambda r: [
        *_prompt_messages(
            "\n\n".join(p for p in (r["instruction"], r.get("input")) if p), r.get("system")
        ),
        {"role": "assistant", "content": r["output"]},
    ],
    "prompt+completion": lambda r: [
        *_prompt_messages(r["prompt"], r.get("system")),
        {"role": "assistant", "content": r["completion"]},
    ],
    "prompt+response": lambda r: [
        *_prompt_messages(r["prompt"], r.get("system")),
        {"role": "assistant", "content": r["response"]},
    ],
    # HuatuoGPT-o1's medical-o1-reasoning-SFT (Chen et al. 2024): the open-ended question, its
    # chain of thought and final response, in the <think>/<answer> form the Citrus prompt asks for
    "Question+Complex_CoT+Response": lambda r: [
        {"role": "user", "content": r["Question"]},
        {
            "role": "assistant",
            "content": f"<think>\n{r['Complex_CoT'].strip()}\n</think>\n"
            f"<answer>\n{r['Response'].strip()}\n</answer>",
        },
    ],
}


def _layout(record: dict, layouts: Iterable[str]) -> str:
    for name in layouts:
        if all(key in record and record[key] is not None for key in name.split("+")):
            return name
    present = sorted(
        k for k, v in record.items() if v is not None
    )  # `datasets` fills absent keys with None
    raise DataError(f"no known layout for keys {present}; expected one of {list(layouts)}")


def to_sft_record(record: dict, default_id: str) -> dict:
    """A chat record `{"id", "messages"}` whose last message is the reply trained on."""
    layout = _layout(record, SFT_LAYOUTS)
    out = {"id": str(record.get("id", default_id)), "messages": SFT_LAYOUTS[layout](record)}
    try:
        return validate_sft_record(out)
    except DataError as e:
        raise DataError(f"{layout} layout: {e}") from None


def _reply(side: Any, what: str) -> tuple[list[dict] | None, str]:
    """(prompt messages or None, reply) of a chosen/rejected field: a string, or a conversation
    ending with the assistant's reply (the Citrus repo's dpo_data.jsonl)."""
    if isinstance(side, str):
        return None, side
    turns = _messages(side, what)
    if not turns or turns[-1]["role"] != "assistant":
        raise DataError(f"{what}: the conversation must end with the assistant's reply")
    return turns[:-1], turns[-1]["content"]


def to_preference_record(record: dict, default_id: str) -> dict:
    """`{"id", "messages" (the prompt), "chosen", "rejected"}` from either a prompt with two reply
    strings or two whole conversations that share their prompt."""
    if record.get("chosen") is None or record.get("rejected") is None:
        raise DataError(f"a preference record needs 'chosen' and 'rejected'; keys {sorted(record)}")
    chosen_prompt, chosen = _reply(record["chosen"], "chosen")
    rejected_prompt, rejected = _reply(record["rejected"], "rejected")
    if (
        chosen_prompt is not None
        and rejected_prompt is not None
        and chosen_prompt != rejected_prompt
    ):
        raise DataError("chosen and rejected conversations have different prompts")
    if record.get("prompt") is not None:
        prompt = _prompt_messages(record["prompt"], record.get("system"))
    elif record.get("messages") is not None:
        prompt = _messages(record["messages"])
    elif chosen_prompt:
        prompt = chosen_prompt
    else:
        raise DataError(
            "no prompt: give 'prompt' (or 'messages'), or chosen/rejected as conversations"
        )
    return validate_preference_record(
        {
            "id": str(record.get("id", default_id)),
            "messages": prompt,
            "chosen": chosen,
            "rejected": rejected,
        }
    )


TRAINING_CONVERTERS = {"sft": to_sft_record, "preference": to_preference_record}


# ---------------------------------------------------------------- multiple-choice questions


def _parse(value: Any) -> Any:
    """Options/answers stored as JSON or Python-literal strings (the Citrus files use both)."""
    if not isinstance(value, str):
        return value
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(value)
        except (ValueError, SyntaxError):
            continue
    return value


def _options(raw: Any) -> dict[str, str]:
    raw = _parse(raw)
    if isinstance(raw, dict) and "options" in raw:  # {"options": {...}} (the JMED sheet)
        raw = raw["options"]
    if isinstance(raw, dict):
        return {k: str(raw[k]) for k in sorted(raw)}
    if (
        isinstance(raw, list) and raw and all(isinstance(o, dict) and "op_idx" in o for o in raw)
    ):  # Citrus OP
        return {
            o["op_idx"]: str(o.get("op_value", o.get("op_text")))
            for o in sorted(raw, key=lambda o: o["op_idx"])
        }
    if isinstance(raw, list) and raw:
        return {LETTERS[i]: str(o) for i, o in enumerate(raw)}
    raise DataError(f"no options (got {str(raw)[:80]!r})")


def _answer(raw: Any, options: dict[str, str]) -> str:
    raw = _parse(raw)
    if isinstance(raw, list):
        if len(raw) != 1:
            raise DataError(f"expected one correct option, got {raw}")
        raw = raw[0]
    if isinstance(raw, int) and not isinstance(raw, bool):
        return LETTERS[raw]  # a 0-based index
    if isinstance(raw, str):
        text = raw.strip()
        if text in options:
            return text
        by_text = [k for k, v in options.items() if v.strip() == text]
        if len(by_text) == 1:
            return by_text[0]
    raise DataError(f"answer {raw!r} is not among options {list(options)}")


# (question, options, answer) key names of each layout, in the order they are tried
MC_LAYOUTS = {
    "unified": ("question", "options", "answer"),
    "citrus": ("Q", "OP", "A"),
    "jmed_sheet": ("final_question", "final_options", "final_correct_answer"),
    "choices": ("question", "choices", "answer"),
}
ID_KEYS = ("id", "diagId", "qid")


def to_mc_question(record: dict, task: str, n: int) -> MCQuestion:
    """A unified multiple-choice question from any layout in MC_LAYOUTS."""
    name = _layout(record, ["+".join(keys) for keys in MC_LAYOUTS.values()])
    q_key, o_key, a_key = name.split("+")
    options = _options(record[o_key])
    rid = next((str(record[k]) for k in ID_KEYS if record.get(k) is not None), str(n))
    context = record.get("context") if isinstance(record.get("context"), str) else None
    return MCQuestion(
        f"{task}-{rid}",
        task,
        str(record[q_key]),
        options,
        _answer(record[a_key], options),
        context=context,
        metadata=pool_labels(record),
    )


def pool_labels(record: dict) -> dict[str, Any]:
    """What the original Citrus labelling adds to its question pool (Q_open, complexity), under
    citrus's metadata keys, and the exam it came from."""
    out = {}
    if isinstance(record.get("Q_open"), str) and record["Q_open"].strip():
        out["open_question"] = record["Q_open"].strip()
    if record.get("complexity") in ("easy", "hard", "unknown"):
        out["difficulty"] = record["complexity"]
    if isinstance(record.get("exam_name"), str):
        out["exam"] = record["exam_name"]
    return out


def read_questions(path: Path, task: str) -> list[MCQuestion]:
    """The questions of a file: citrus's unified schema (`citrus label` output), or any layout of
    MC_LAYOUTS, e.g. the original Citrus question pool (exam_name, id, Q, A, C, OP, and Q_open and
    complexity once labelled). A bad record stops the read, naming the file and the record."""
    out, seen = [], set()
    for n, row in enumerate(load_rows(path)):
        try:
            # "benchmark" marks citrus's own schema: a record missing a field says which one
            q = MCQuestion.from_dict(row) if "benchmark" in row else to_mc_question(row, task, n)
        except (DataError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: record {n + 1}: {e}") from None
        if q.id in seen:
            raise DataError(f"{path}: record {n + 1}: duplicate id {q.id!r}")
        seen.add(q.id)
        out.append(q)
    if not out:
        raise DataError(f"{path}: no questions")
    return out
