"""The data jobs end to end on CPU.

- Every role over a real HTTP server on 127.0.0.1 answered by a scripted clinician (it stands
  for the hosted models Citrus uses, and makes the control flow checkable: invalid steps,
  feedback that steers, the completeness votes, a narrative that concludes wrongly, judges).
- The real tiny model through the hf engine playing every role: the loop runs, every question
  ends kept, dropped or failed with a reason, and a rerun resumes without a single new request.
"""

from __future__ import annotations

import json
import re

import pytest
from chat_server import ChatServer
from conftest import ROOT, compose_config, needs_files
from datasets import load_dataset

from citrus.data import quickstart
from citrus.data.benchmarks import load_task
from citrus.jobs import execute

ROLES = ("teacher", "critic", "judge", "policy", "answer_mapper", "strong", "weak")
LIMIT = 4


LONG_THINK = (
    "The history, the examination and the tests each narrow the differential; I list the "
    "candidates, weigh every one against the findings, set aside those that do not fit, and "
    "check the one left against each finding again before I commit to it."
)  # over the 200 characters the original's pair filter asks of a reply's reasoning


class ScriptedClinician:
    """Replies as each role would, recognised by its prompt (citrus's and the original recipe's).
    The first step of every case jumps to a conclusion (the critic rejects it); the narrative of
    one case concludes wrongly; the judges prefer correct answers."""

    def __init__(self):
        self.prompts: list[list[dict]] = []
        self.policy_calls = 0
        self.wrong_case = quickstart.generate("train", LIMIT)[
            1
        ].question  # its narrative concludes wrongly

    def generate(self, conversations, on_batch=None, seeds=None):
        return [self.reply(m) for m in conversations]

    def reply(self, messages):
        self.prompts.append(messages)
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        user = messages[-1]["content"]
        gold = re.search(
            r"(?:Correct answer \(secret, never mention it\)|Correct answer \(never cite it\)): "
            r"(?:(\w)\. )?(.+)",
            user,
        )
        if system.startswith("You rewrite"):
            stem = user.split("Multiple-choice question:\n", 1)[1].split("\nA. ", 1)[0]
            return f"Open-ended question: {stem.strip()} What is the most likely diagnosis?"
        if user.startswith("The question below was written for a closed"):  # the original's
            stem = user.split("\n\n", 2)[1]
            return f"{stem.strip()} Please describe the most likely diagnosis."
        if "thinking aloud" in system:
            if "(nothing yet)" in user and "rejected your last attempt" not in user:
                return "I am sure it is the first disease that comes to mind."
            return f"Step: the findings narrow the differential (step {user.count('Step ') + 1})."
        if "stream of consciousness" in user:  # the original's monologue: no memory of steps
            step = "The findings narrow the differential; next, weigh each one."
            return f"<Reasoning>\n{step}\n</Reasoning>"
        if "review one step" in system:
            if "I am sure" in user.split("New step to review:", 1)[1]:
                return (
                    "Rating: 0\nFeedback: List the findings and the differential before concluding."
                )
            return "**Rating:** 1\nFeedback: Now weigh each candidate against the findings."
        if "is complete" in system:
            return "Complete: yes" if user.count("Step ") >= 2 else "Complete: no"
        if user.startswith("Judge the thinking below"):
            return "Complete: yes"
        if "monologue" in system:
            letter, name = gold.groups()
            if self.wrong_case in user:
                letter = "A" if letter != "A" else "B"
            return (
                "<think>\nSo the findings fit; wait, alternatively... no.\n</think>\n"
                f"<answer>{letter}</answer>"
            )
        if user.startswith("Rewrite the raw reasoning notes"):  # the original's narrator
            truth = re.search(r"<ground truth>\n(.+)\n</ground truth>", user).group(1)
            return f"So the findings fit, and therefore it is {truth}.\n<answer>{truth}</answer>"
        if system.startswith(
            "You grade the form"
        ):  # answer mapper: reads "option N", which no rule does
            found = re.search(r"option (\d)", user.split("Reply (its end):", 1)[1])
            return f"**{'ABCD'[int(found.group(1)) - 1]}**" if found else "none"
        if "Score the answer" in system:  # pointwise: the rubric's format
            score = 90 if "[Correctness of the answer]:\ncorrect" in user else 20
            return f"<reason>\n1. Correctness: scripted\n</reason>\n\n<score>\n{score}\n</score>"
        if "Compare two answers" in system:
            first = "[Correctness of answer 1]:\ncorrect" in user
            better, s1, s2 = (1, 90, 20) if first else (2, 20, 90)
            return (
                f"<reason>scripted</reason>\n<better_item>\n{better}\n</better_item>\n"
                f"<score_1>\n{s1}\n</score_1>\n<score_2>\n{s2}\n</score_2>"
            )
        # the policy, or the strong / weak models answering the MC form: cycle through the options
        self.policy_calls += 1
        options = re.findall(r"^([A-F])\. (.+)$", user, re.M)
        if options:
            letter, _ = options[self.policy_calls % len(options)]
            return f"<think>thinking</think><answer>{letter}</answer>"
        n = self.policy_calls % 4 + 1
        return f"<think>{LONG_THINK}</think><answer>option {n}</answer>"


# citrus's own loop, pair rules and prompts, where the original recipe is the default
CITRUS_WAY = (
    "synthesis.label.rewrite_prompt=open_rewrite",
    "synthesis.label.prompt=citrus_expert",
    "synthesis.synthesize.num_loop=8",
    "synthesis.synthesize.step_context=trace",
    "synthesis.synthesize.judge_context=question_trace",
    "synthesis.synthesize.record_form=mc",
    "synthesis.synthesize.keep=gold",
    "synthesis.sample.prompt=open_answer",
    "synthesis.sample.order=alternate",
    "synthesis.sample.best_correct=true",
    "synthesis.sample.max_pairs=5",
    "synthesis.sample.rewrap=false",
)


def over_http(url: str, tmp_path) -> list[str]:
    overrides = []
    for role in ROLES:
        overrides += [
            f"role@roles.{role}=openai",
            f"roles.{role}.engine.base_url={url}",
            f"roles.{role}.engine.served_model=scripted",
            f"roles.{role}.engine.cache_path={tmp_path / 'cache.jsonl'}",
            f"roles.{role}.engine.concurrency=4",
        ]
    return overrides


def job(name: str, run_dir, *overrides: str) -> dict:
    overrides = ["logger=none", f"synthesis.limit={LIMIT}", "synthesis.chunk=3", *overrides]
    return execute(name, compose_config(name, overrides), run_dir, overrides).metrics


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """label -> synthesize -> sample (judges) with every role served over HTTP."""
    root = tmp_path_factory.mktemp("scripted")
    clinician = ScriptedClinician()
    with ChatServer(clinician) as server:
        roles = [*over_http(server.url, root), *CITRUS_WAY]
        label = job("label", root / "label", *roles)
        synth = job(
            "synthesize",
            root / "synthesize",
            *roles,
            f"synthesis.source={root / 'label' / 'labeled.jsonl'}",
        )
        sample = job(
            "sample",
            root / "sample",
            *roles,
            f"synthesis.source={root / 'label' / 'labeled.jsonl'}",
            "synthesis.sample.num_samples=4",
        )
    return root, clinician, label, synth, sample


def test_label_writes_open_questions_and_difficulty(scripted):
    root, _, metrics, _, _ = scripted
    labeled = lines(root / "label" / "labeled.jsonl")
    assert len(labeled) == LIMIT and metrics["label/done"] == LIMIT
    for r in labeled:
        meta = r["metadata"]
        assert (
            meta["open_question"].endswith("What is the most likely diagnosis?")
            and "\nA. " not in meta["open_question"]
        )
        assert meta["difficulty"] in {"easy", "unknown", "hard"}
        assert meta["difficulty"] == (
            "hard"
            if meta["pass_rate_weak"] < 0.5
            else "unknown"
            if meta["pass_rate_strong"] < 0.5
            else "easy"
        )
    assert metrics["usage/teacher/requests"] == LIMIT


def test_synthesis_loop_follows_the_critic_and_the_judge(scripted):
    root, clinician, metrics, _, _ = scripted
    audit = {r["id"]: r for r in lines(root / "synthesize" / "pathways.jsonl")}
    assert len(audit) == LIMIT
    for r in audit.values():
        first = r["rounds"][0]
        assert first["rating"] == 0 and first["step"].startswith("I am sure")  # dropped...
        assert (
            "List the findings" in r["rounds"][1]["step_prompt"][-1]["content"]
        )  # ...its feedback steers the next
        assert all(t["feedback"] for t in r["trace"]) and len(r["trace"]) == len(r["rounds"]) - 1
        assert r["votes"] == 3 and len(r["rounds"]) == 5  # yes at 2, 3 and 4 valid steps
        assert r["narrative_prompt"][-1]["content"].count("Step ") == 4
        assert r["rounds"][-1]["judge_reply"] == "Complete: yes"
    statuses = {i: r["status"] for i, r in audit.items()}
    assert statuses.pop("quickstart-train-0-00001") == "dropped" and set(statuses.values()) == {
        "kept"
    }
    assert "gold is" in audit["quickstart-train-0-00001"]["reason"]
    sft = load_dataset("json", data_files=str(root / "synthesize" / "sft.jsonl"), split="train")
    assert len(sft) == LIMIT - 1 and sft[0]["messages"][-1]["role"] == "assistant"
    assert all("<think>" in m[-1]["content"] for m in sft["messages"])
    for prompt in clinician.prompts:  # the critic knows the answer; the step writer never sees it
        if "thinking aloud" in prompt[0]["content"]:
            assert "Correct answer" not in prompt[-1]["content"]


def test_sample_pairs_agree_with_the_judges(scripted):
    root, _, _, _, metrics = scripted
    audit = lines(root / "sample" / "samples.jsonl")
    pairs = load_dataset("json", data_files=str(root / "sample" / "pairs.jsonl"), split="train")
    assert len(audit) == LIMIT and metrics["sample/pairs"] == len(pairs) > 0
    for r in audit:
        samples = r["samples"]
        assert len(samples) == 4 and all(
            s["rule"] == "answer_check" for s in samples
        )  # mapped by the answer mapper
        if r["status"] == "kept":
            chosen = samples[r["chosen"]]
            assert chosen["correct"] and chosen["score"] == 90
            for p in r["pairs"]:
                assert samples[p["rejected"]]["score"] < 60 and p["agree"] == (
                    p["better"] == 1 + p["order"].index(r["chosen"])
                )
    first = pairs[0]
    assert (
        first["messages"][-1]["content"].startswith("Answer this medical question")
        and first["chosen"] != first["rejected"]
    )


def test_a_rerun_resumes_without_new_requests(scripted, tmp_path):
    root, _, _, _, _ = scripted
    before = (root / "sample" / "samples.jsonl").read_text()
    clinician = ScriptedClinician()
    with ChatServer(clinician) as server:  # a fresh server: nothing cached on its side
        again = job(
            "sample",
            root / "sample",
            *over_http(server.url, tmp_path),
            *CITRUS_WAY,
            f"synthesis.source={root / 'label' / 'labeled.jsonl'}",
            "synthesis.sample.num_samples=4",
        )
    assert clinician.prompts == [] and server.seen == {}
    assert (root / "sample" / "samples.jsonl").read_text() == before and again[
        "sample/done"
    ] == LIMIT


def test_a_killed_job_finishes_each_question_exactly_once(tmp_path):
    clinician = ScriptedClinician()
    with ChatServer(clinician) as server:
        roles = over_http(server.url, tmp_path)
        job("synthesize", tmp_path / "run", *roles)
        log = tmp_path / "run" / "pathways.jsonl"
        first, second, *_ = log.read_text().splitlines(keepends=True)
        log.write_text(first + second[: len(second) // 2])  # killed while writing the second record
        asked = len(clinician.prompts)
        job("synthesize", tmp_path / "run", *roles)
    ids = [r["id"] for r in lines(log)]
    assert sorted(ids) == sorted(
        q.id for q in quickstart.generate("train", LIMIT)
    )  # each once, none lost
    assert (
        len(clinician.prompts) == asked
    )  # redoing the unfinished questions paid for no request twice
    cache = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert len({c["key"] for c in cache}) == len(cache) == asked


def test_requests_that_fail_for_good_are_recorded_per_item(tmp_path):
    with ChatServer(ScriptedClinician(), faults=["500"] * 100) as server:
        roles = over_http(server.url, tmp_path) + [f"roles.{r}.engine.max_retries=1" for r in ROLES]
        roles += [f"roles.{r}.engine.backoff_s=0.01" for r in ROLES]
        metrics = job("label", tmp_path / "run", *roles)
    records = lines(tmp_path / "run" / "labeled.progress.jsonl")
    assert metrics["label/failed"] == LIMIT == len(records)
    assert all(r["status"] == "failed" and "HTTP 500" in r["reason"] for r in records)


TINY = (
    "roles.teacher.max_new_tokens=24",
    "roles.critic.max_new_tokens=16",
    "roles.judge.max_new_tokens=8",
    "roles.strong.max_new_tokens=16",
    "roles.weak.max_new_tokens=16",
    "roles.policy.max_new_tokens=24",
    "roles.answer_mapper.max_new_tokens=4",
    "synthesis.synthesize.num_loop=2",
    "synthesis.sample.num_samples=3",
)


@pytest.mark.parametrize(
    "name,log",
    [
        ("label", "labeled.progress.jsonl"),
        ("synthesize", "pathways.jsonl"),
        ("sample", "samples.jsonl"),
    ],
)
def test_the_tiny_model_plays_every_role(name, log, tmp_path):
    metrics = job(name, tmp_path, "experiment=quickstart", *TINY)
    records = lines(tmp_path / log)
    assert sorted(r["id"] for r in records) == sorted(
        q.id for q in quickstart.generate("train", LIMIT)
    )
    assert all(
        r["status"] in {"kept", "dropped", "failed"} and (r["status"] == "kept" or r["reason"])
        for r in records
    )
    assert (
        metrics["usage/usd"] == 0.0
        and sum(v for k, v in metrics.items() if k.endswith("/completion_tokens")) > 0
    )
    again = job(name, tmp_path, "experiment=quickstart", *TINY)  # resumes: nothing left to ask
    assert all(v == 0 for k, v in again.items() if k.endswith("/requests"))


@needs_files
def test_decontamination_flags_copied_benchmark_questions(tmp_path):
    medqa = compose_config("evaluate", ["benchmark=medqa", f"benchmark.data_root={ROOT}"])
    leaked = load_task(
        "medqa", medqa.benchmark.tasks.medqa, medqa.benchmark, medqa.paths.data_dir
    ).items[7]
    records = [quickstart.to_sft_record(q, "quickstart") for q in quickstart.generate("train", 5)]
    records.append(
        {
            "id": "leak",
            "messages": [
                {"role": "user", "content": "Q: " + leaked.question},
                {"role": "assistant", "content": "<answer>A</answer>"},
            ],
        }
    )
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics = job(
        "decontaminate",
        tmp_path / "run",
        f"data.path={data}",
        "benchmark=medqa",
        f"benchmark.data_root={ROOT}",
    )
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert metrics["decontaminate/flagged"] == 1 and list(report["overlaps"]) == ["leak"]
    assert report["overlaps"]["leak"] == [f"medqa/{leaked.id}"]
    assert [r["id"] for r in lines(tmp_path / "run" / "clean.jsonl")] == [
        r["id"] for r in records[:-1]
    ]


def test_pipeline_chains_synthesize_sft_sample_and_preference(tmp_path):
    """Every stage, with the roles served over HTTP: synthesized traces join the SFT data, the
    pairs train the preference stage from the SFT export, and the table has a column per stage."""
    from conftest import SMOKE

    with ChatServer(ScriptedClinician()) as server:
        overrides = [
            *SMOKE,
            *over_http(server.url, tmp_path),
            f"synthesis.limit={LIMIT}",
            "synthesis.sample.num_samples=4",
            "pipeline.stages=[synthesize,sft,sample,preference]",
            "pipeline.preference.trainer.max_steps=2",
            "+pipeline.preference.trainer.micro_batch_size=2",
        ]
        metrics = execute(
            "pipeline", compose_config("pipeline", overrides), tmp_path, overrides
        ).metrics
    n_train = 48  # SMOKE's quickstart SFT data
    assert (
        len(lines(tmp_path / "synthesize" / "sft_data.jsonl"))
        == n_train + metrics["synthesize/kept"]
        > n_train
    )
    assert metrics["sft/steps"] == 6 and metrics["preference/steps"] == 2
    assert "rewards/margins" in " ".join(metrics) and metrics["sample/pairs"] > 0
    for stage in ("evaluate_base", "evaluate_sft", "evaluate_preference"):
        assert (tmp_path / stage / "metrics.json").is_file()
    cfg = json.loads((tmp_path / "preference" / "model" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    saved = (tmp_path / "preference" / "model" / "citrus_config.yaml").read_text()
    assert (
        "loss: simpo" in saved and f"path: {tmp_path / 'sft' / 'model'}" in saved
    )  # started from the SFT export


def test_pipeline_stages_are_checked_first(tmp_path):
    from citrus.pipeline import check_stages

    check_stages(["synthesize", "sft", "sample", "preference"])
    for bad, message in (
        (["sft", "rlhf"], "unknown"),
        (["sample", "sft"], "in the order"),
        (["sft", "preference"], "add sample"),
    ):
        with pytest.raises(ValueError, match=message):
            check_stages(bad)


def test_a_source_task_gives_synthesis_limit_questions_whatever_the_eval_limit(tmp_path):
    """benchmark.limit sizes the evaluation, synthesis.limit the questions synthesis reads: a
    benchmark group of 8 questions a task must not cut a 24-question synthesis to 8."""
    from types import SimpleNamespace

    from citrus.record import RunRecord
    from citrus.synthesis.common import load_questions

    overrides = [
        "+benchmark/task@synthesis.source_task=medqa_train",
        f"benchmark.data_root={ROOT}",
        "benchmark.limit=8",
        "synthesis.limit=24",
    ]
    cfg = compose_config("synthesize", overrides)
    run = SimpleNamespace(record=RunRecord(tmp_path, "synthesize", overrides, {}))
    questions = load_questions(cfg, run)
    assert len(questions) == 24 and all(q.id.startswith("medqa_train-") for q in questions)
    assert any(i["role"] == "synthesis/source" for i in run.record.data["inputs"].values())
