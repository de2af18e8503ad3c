"""Bad input, one table: each kind fails with a message that names the file, record or key at
fault, and leaves nothing that looks finished (run.json says failed; no model/, no metrics.json)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SMOKE, compose_config, run_cli
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from citrus.jobs import execute

SMALL = [
    "experiment=quickstart",
    "logger=none",
    "trainer.max_steps=2",
    "trainer.micro_batch_size=2",
    "benchmark.tasks.quickstart.limit=2",
    "engine.max_new_tokens=8",
]


def jsonl(path: Path, *records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def chat(rid, reply="<think>x</think><answer>A</answer>", **extra):
    return {
        "id": rid,
        "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": reply}],
        **extra,
    }


def mc(rid, **fields):
    record = {
        "id": rid,
        "benchmark": "t",
        "question": "Q?",
        "options": {"A": "x", "B": "y"},
        "answer": "A",
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not None}


def no_template_model(tmp: Path) -> str:
    from citrus.models import resolve_path

    built = Path(resolve_path(compose_config("train", ["model=tiny_llama"]).model))
    target = tmp / "no-template"
    shutil.copytree(built, target)
    (target / "chat_template.jinja").unlink()
    config = json.loads((target / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    (target / "citrus_build.json").unlink()
    return str(target)


# kind -> (job, overrides made from a scratch dir, the message expected)
CASES: dict[str, tuple[str, Callable[[Path], list[str]], str]] = {
    "empty file": (
        "train",
        lambda t: [f"data.path={jsonl(t / 'empty.jsonl')}"],
        r"empty\.jsonl: no records",
    ),
    "bad JSON line": (
        "train",
        lambda t: [f"data.path={jsonl(t / 'bad.jsonl', chat('a'), '{oops')}"],
        r"bad\.jsonl:2: bad JSON",
    ),
    "duplicate ids": (
        "train",
        lambda t: [f"data.path={jsonl(t / 'dup.jsonl', chat('a'), chat('a'))}"],
        r"dup\.jsonl: record 2: duplicate id 'a'",
    ),
    "zero-length completion": (
        "train",
        lambda t: [f"data.path={jsonl(t / 'zero.jsonl', chat('a', reply=''))}"],
        r"zero\.jsonl: record 1: SFT record 'a': "
        r"the last message must be a non-empty assistant reply",
    ),
    "message without a role": (
        "train",
        lambda t: [
            f"data.path={jsonl(t / 'role.jsonl', {'id': 'r', 'messages': [{'content': 'hi'}]})}"
        ],
        r"role\.jsonl: record 1: SFT record 'r': message 0 needs a role",
    ),
    "sequence longer than max length": (
        "train",
        lambda t: [
            "model.max_length=64",
            f"data.path={jsonl(t / 'long.jsonl', chat('long', reply='word ' * 200))}",
        ],
        r"record 'long': \d+ tokens exceed the limit of 64 \(model\.max_length",
    ),
    "chosen equals rejected": (
        "train",
        lambda t: [
            "algorithm=cpo",
            "data=quickstart_pairs",
            "data.path="
            + str(
                jsonl(
                    t / "pairs.jsonl",
                    {
                        "id": "p",
                        "messages": [{"role": "user", "content": "Q"}],
                        "chosen": "R",
                        "rejected": "R",
                    },
                )
            ),
        ],
        r"pairs\.jsonl: record 1: preference record 'p': chosen and rejected are the same reply",
    ),
    "data format the algorithm cannot train": (
        "train",
        lambda t: ["algorithm=cpo_simpo"],
        r"algorithm=cpo_simpo trains on preference records, "
        r"but data=quickstart has data\.format='sft'",
    ),
    "missing data file": (
        "train",
        lambda t: [f"data.path={t / 'nowhere.jsonl'}"],
        r"data\.path: .*nowhere\.jsonl does not exist",
    ),
    "released data in an unknown layout": (
        "train",
        lambda t: ["data=citrus_s3", f"data.path={jsonl(t / 's3.jsonl', {'q': 'Q', 'a': 'A'})}"],
        r"s3\.jsonl: record 1: no known layout for keys \['a', 'q'\]",
    ),
    "missing model path": (
        "train",
        lambda t: ["model=qwen2.5-0.5b-instruct", f"model.path={t / 'no-model'}"],
        r"model\.path=.*no-model: no model there .*model=qwen2\.5-0\.5b-instruct",
    ),
    "tokenizer without a chat template": (
        "train",
        lambda t: ["model=qwen2.5-0.5b-instruct", f"model.path={no_template_model(t)}"],
        r"tokenizer of model 'qwen2\.5-0\.5b-instruct' .* has no chat template; "
        r"set model\.chat_template",
    ),
    "question without options": (
        "evaluate",
        lambda t: [
            "benchmark.tasks.quickstart.loader=unified",
            "benchmark.tasks.quickstart.file=q.jsonl",
            f"benchmark.data_root={jsonl(t / 'q.jsonl', mc('q1', options=None)).parent}",
        ],
        r"q\.jsonl: record 1: record 'q1': missing field\(s\) \['options'\]",
    ),
    "answer not among the options": (
        "evaluate",
        lambda t: [
            "benchmark.tasks.quickstart.loader=unified",
            "benchmark.tasks.quickstart.file=q.jsonl",
            f"benchmark.data_root={jsonl(t / 'q.jsonl', mc('q1', answer='E')).parent}",
        ],
        r"q\.jsonl: record 1: question 'q1' \(t\): answer 'E' is not among options \['A', 'B'\]",
    ),
    "unknown loader": (
        "evaluate",
        lambda t: ["benchmark.tasks.quickstart.loader=nope"],
        r"benchmark task 'quickstart': unknown loader 'nope'",
    ),
    "unknown pipeline stage": (
        "pipeline",
        lambda t: ["pipeline.stages=[finetune]"],
        r"pipeline\.stages: unknown \['finetune'\]",
    ),
    "unknown preference data": (
        "pipeline",
        lambda t: ["pipeline.stages=[preference]", "pipeline.preference.data=nope"],
        r"pipeline\.preference\.data='nope': no .*conf/data/nope\.yaml",
    ),
}


@pytest.mark.parametrize("kind", CASES)
def test_bad_input_fails_naming_the_place_and_leaves_nothing_finished(kind, tmp_path):
    job, make, expected = CASES[kind]
    overrides = [*SMALL, *make(tmp_path)]
    run_dir = tmp_path / "run"
    with pytest.raises(Exception) as info:
        execute(job, compose_config(job, overrides), run_dir, overrides)
    assert re.search(expected, str(info.value)), f"{kind}: {info.value}"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed" and re.search(expected, record["error"])
    assert not (run_dir / "model").exists() and not (run_dir / "metrics.json").exists()


# kind -> (override, what the message names); these fail while the config is composed: no run starts
COMPOSE_CASES = {
    "misspelled override": ("trainer.max_stepz=5", r"Key 'max_stepz' not in 'TrainerConfig'"),
    "wrong type": ("trainer.max_steps=ten", r"trainer\.max_steps.*ten|ten.*trainer\.max_steps"),
    "unknown benchmark": ("benchmark=nope", r"Could not find 'benchmark/nope'"),
    "unknown model": ("model=gpt5", r"Could not find 'model/gpt5'.*tiny_llama"),
}


@pytest.mark.parametrize("kind", COMPOSE_CASES)
def test_bad_config_fails_at_compose_time_naming_the_key(kind):
    override, expected = COMPOSE_CASES[kind]
    with pytest.raises((HydraException, OmegaConfBaseException)) as info:
        compose_config("train", [override])
    message = f"{info.value}\n{info.value.__cause__ or ''}"  # what the command line prints
    assert re.search(expected, message, re.S), f"{kind}: {message}"


def test_the_table_covers_at_least_fifteen_kinds():
    assert len(CASES) + len(COMPOSE_CASES) >= 15


@pytest.mark.parametrize(
    "write,message",
    [
        (None, "does not exist"),  # a missing data file
        (
            json.dumps(
                {
                    "id": "a",
                    "messages": [
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "yo"},
                    ],
                }
            )
            + '\n{"id": "b", "mess',
            "train.jsonl:2: bad JSON",
        ),
    ],
    ids=["missing file", "bad record"],
)
def test_the_cli_prints_a_user_error_in_a_few_lines_without_a_traceback(tmp_path, write, message):
    data = tmp_path / "train.jsonl"
    if write is not None:
        data.write_text(write)
    args = ["train", *SMOKE, f"data.path={data}", f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_cli(*args)
    assert result.returncode == 1
    assert "Traceback (most recent" not in result.stderr and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 4, result.stderr
    assert str(data) in result.stderr  # names the file at fault
    debug = run_cli(*args, env={"CITRUS_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback (most recent" in debug.stderr
