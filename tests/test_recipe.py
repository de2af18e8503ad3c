"""The Citrus recipe as the original code runs it (jdh-algo/Citrus): its own example files read
as they are, citrus's records in their shape, the default data jobs following the original's
loop and pair rules with every role served over HTTP, and each pair rule and filter alone."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from chat_server import ChatServer
from conftest import REPO, ROOT, compose_config
from test_synthesis import LIMIT, ScriptedClinician, job, lines, over_http

from citrus.data.layouts import read_questions, to_preference_record
from citrus.data.quickstart import generate
from citrus.prompts import build_messages
from citrus.synthesis.parsers import parse_open_question
from citrus.synthesis.sample import pair_records, pair_stands, pick, rejection

ORIGINAL = ROOT  # the original repository's files (../shared/benchmarks/citrus-repo)
POOL = ORIGINAL / "origin_files/origin_files_w_data_label/medqa_train_small.jsonl"
EXAMPLES = ORIGINAL / "model_train/example_data_for_train"
needs_original = pytest.mark.skipif(not POOL.is_file(), reason=f"no {POOL}")
THINK_ANSWER = re.compile(r"<think>\n(.+)\n</think>\n<answer>\n(.+)\n</answer>", re.S)


@needs_original
def test_the_original_labelled_pool_is_read_as_it_is():
    questions = read_questions(POOL, "medqa_train_small")
    raw = [json.loads(line) for line in POOL.read_text().splitlines()]
    assert len(questions) == len(raw) == 50
    for q, r in zip(questions, raw):
        assert q.question == r["Q"] and q.answer == r["A"]
        assert q.options == {o["op_idx"]: o["op_value"] for o in r["OP"]}
        assert q.metadata["open_question"] == r["Q_open"].strip()
        assert q.metadata["difficulty"] == r["complexity"]
    assert {q.metadata["difficulty"] for q in questions} == {"easy", "hard"}


@needs_original
def test_every_open_rewrite_of_the_original_sample_parses():
    rewrites = [json.loads(line)["Q_open"] for line in POOL.read_text().splitlines()]
    requests = [r for r in rewrites if r.rstrip().endswith(".")]
    assert len(requests) == 13  # "Please describe the most likely diagnosis ...", not a "?"
    assert all(parse_open_question(r) == r.strip() for r in rewrites)


def original_prompt_shape(text: str) -> str:
    """A prompt with its question taken out: what is left is the template."""
    return re.sub(r"<Question>\n.*\n</Question>", "<Question>\n…\n</Question>", text, flags=re.S)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """label -> synthesize -> sample with the defaults (the original recipe) over HTTP."""
    root = tmp_path_factory.mktemp("recipe")
    clinician = ScriptedClinician()
    with ChatServer(clinician) as server:
        roles = over_http(server.url, root)
        labeled = root / "label" / "labeled.jsonl"
        job("label", root / "label", *roles)
        job("synthesize", root / "synthesize", *roles, f"synthesis.source={labeled}")
        job("sample", root / "sample", *roles, f"synthesis.source={labeled}",
            "synthesis.sample.num_samples=8")  # fmt: skip
    return root, clinician


def test_labelling_shows_the_stem_alone_and_keeps_requests(recipe):
    root, clinician = recipe
    rewrites = [p for p in clinician.prompts if "written for a closed" in p[-1]["content"]]
    assert len(rewrites) == LIMIT and all("\nA. " not in p[-1]["content"] for p in rewrites)
    labeled = lines(root / "label" / "labeled.jsonl")
    assert all(r["metadata"]["open_question"].endswith("diagnosis.") for r in labeled)
    complexity = [p for p in clinician.prompts if "### options:" in p[-1]["content"]]
    # the strong and weak roles ask with the complexity prompt (here one served model, so the
    # weak role's identical requests come from the cache)
    assert len({p[-1]["content"] for p in complexity}) == LIMIT


def test_synthesis_runs_the_originals_loop(recipe):
    root, _ = recipe
    for r in lines(root / "synthesize" / "pathways.jsonl"):
        q = r["question"]
        assert len(r["rounds"]) == 2  # num_loop 2; the >2-votes stop never comes first
        assert r["votes"] == 2 and all(round_["complete"] for round_ in r["rounds"])
        for round_ in r["rounds"]:  # every step sees the open question alone
            step = round_["step_prompt"][-1]["content"]
            assert q["metadata"]["open_question"] in step and "Reviewer" not in step
            critic = round_["critic_prompt"][-1]["content"]  # the answer as text only
            answer = q["options"][q["answer"]]
            assert f"): {answer}" in critic and f"{q['answer']}. {answer}" not in critic
            judge = round_["judge_prompt"][-1]["content"]  # the trace alone, no case
            assert q["metadata"]["open_question"] not in judge
        narrator = r["narrative_prompt"][-1]["content"]
        assert "\nA. " not in narrator and f"<ground truth>\n{answer}\n</ground truth>" in narrator
        assert r["status"] == "kept"  # keep=all


@needs_original
def test_synthesized_records_have_the_shape_of_the_originals_sft_data(recipe):
    root, _ = recipe
    (example,) = [
        json.loads(line) for line in (EXAMPLES / "sft_data.jsonl").read_text().splitlines()
    ]
    records = lines(root / "synthesize" / "sft.jsonl")
    assert len(records) == LIMIT
    for record in records:
        user, reply = record["messages"]  # no system message, as the original's input
        assert user["role"] == "user" and reply["role"] == "assistant"
        assert original_prompt_shape(user["content"]) == original_prompt_shape(example["input"])
        assert THINK_ANSWER.fullmatch(reply["content"]) and THINK_ANSWER.fullmatch(
            example["target"]
        )
        answer = THINK_ANSWER.fullmatch(reply["content"]).group(2)
        assert not re.fullmatch(r"[A-E]", answer)  # the answer in words, as the original's


@needs_original
def test_sampled_pairs_have_the_shape_of_the_originals_dpo_data(recipe):
    root, _ = recipe
    (raw,) = [json.loads(line) for line in (EXAMPLES / "dpo_data.jsonl").read_text().splitlines()]
    example = to_preference_record(raw, default_id="example")
    pairs = lines(root / "sample" / "pairs.jsonl")
    assert pairs and set(pairs[0]) == set(example) == {"id", "messages", "chosen", "rejected"}
    for pair in pairs:
        assert [m["role"] for m in pair["messages"]] == [m["role"] for m in example["messages"]]
        assert original_prompt_shape(pair["messages"][0]["content"]).startswith(
            "You are tasked with addressing a medical examination question."
        )
        assert THINK_ANSWER.fullmatch(pair["chosen"]) and THINK_ANSWER.fullmatch(pair["rejected"])
    audit = lines(root / "sample" / "samples.jsonl")
    assert all(len(r["records"]) <= 3 for r in audit)  # max_pairs
    policy = audit[0]["prompt"]  # asked with the expert prefix and the Citrus prompt
    assert policy[0]["role"] == "system" and policy[0]["content"].startswith("You are an expert")


# ---------------------------------------------------------------- each pair rule alone

RULES = SimpleNamespace(best_min=60, best_correct=False, worst=5, bad_below=60, order="fixed",
                        max_pairs=3, min_think_chars=200, max_chars=8192, pairing="judges",
                        rewrap=True)  # fmt: skip
LONG = "x" * 200


def answers(*scores, correct=(0,)):
    return [
        {"score": s, "correct": i in correct, "pred": "ABCDEFGHIJ"[i],
         "response": f"<think>{LONG}</think><answer>{'ABCDEFGHIJ'[i]}</answer>"}
        for i, s in enumerate(scores)
    ]  # fmt: skip


def test_the_best_answer_must_reach_60():
    assert pick(answers(59, 10, 20), RULES)[0] is None
    best, bad, _ = pick(answers(60, 10, 20), RULES)
    assert best == 0 and bad == [1, 2]  # lowest first


def test_the_best_is_by_score_not_correctness_unless_asked():
    samples = answers(70, 90, 10, correct=(0,))  # the top score is a wrong answer
    assert pick(samples, RULES)[0] == 1
    assert pick(samples, SimpleNamespace(**{**vars(RULES), "best_correct": True}))[0] == 0


def test_rejections_come_from_the_five_lowest_under_60():
    samples = answers(95, 50, 55, 58, 59, 40, 30, 61)
    best, bad, _ = pick(samples, RULES)
    # the five lowest: 30, 40, 50, 55, 58; 59 is sixth lowest, 61 is not under 60
    assert best == 0 and bad == [6, 5, 1, 2, 3]
    assert pick(answers(90, 70, 65), RULES)[1] == []  # none under 60: no pair
    assert pick([{**a, "score": None} for a in answers(90, 10)], RULES)[0] is None  # unreadable


@pytest.mark.parametrize(
    "better, score_1, score_2, stands",
    [
        (1, 80, 20, True),
        (0, 80, 20, False),  # a tie
        (2, 20, 80, False),  # the judge prefers the rejected answer
        (1, 50, 50, False),  # equal scores
        (1, None, 20, False),  # an unreadable score
    ],
)
def test_a_pair_stands_on_the_pairwise_verdict_and_scores(better, score_1, score_2, stands):
    samples = answers(90, 20)
    pair = {"rejected": 1, "order": [0, 1], "better": better, "score_1": score_1,
            "score_2": score_2}  # fmt: skip
    assert pair_stands(pair, samples, 0) is stands
    swapped = {**pair, "order": [1, 0], "better": {1: 2, 2: 1}.get(better, better),
               "score_1": score_2, "score_2": score_1}  # fmt: skip
    assert pair_stands(swapped, samples, 0) is stands  # the chosen answer shown second
    samples[1]["score"] = 95  # the pointwise scores disagree
    assert pair_stands(pair, samples, 0) is False


QUESTION = generate("train", 1, seed=3)[0]
PROMPT = [{"role": "user", "content": "What is the diagnosis?"}]


def side(answer="B", think=LONG, pred="B"):
    return {"response": f"<think>{think}</think><answer>{answer}</answer>", "pred": pred}


@pytest.mark.parametrize(
    "chosen, rejected, reason",
    [
        (side("A", pred="A"), side(), None),
        (side("A", think="short", pred="A"), side(), "chosen: reasoning under 200 characters"),
        (side("A", pred="A"), side(think="y" * 199), "rejected: reasoning under 200"),
        (side(pred="B"), side(), "both answers are the same option"),
        (side("A", LONG + "<answer>", "A"), side(), "chosen: a template tag left in"),
        (side("A", LONG + "です", "A"), side(), "chosen: Japanese, Korean or Arabic script"),
        (side("A", "x" * 9000, "A"), side(), "chosen: over 8192 characters"),
        (side("A", LONG + "诊断", "A"), side(), "chosen: not in the question's language"),
        (side("A", "I'm sorry, " + LONG, "A"), side(), "chosen: a refusal or a preamble"),
    ],
)
def test_each_post_filter(chosen, rejected, reason):
    got = rejection(QUESTION, PROMPT, chosen, rejected, RULES)
    assert got == reason or (reason and got and got.startswith(reason))


def test_at_most_three_pairs_different_answers_and_lowest_scores_first():
    samples = answers(90, 10, 20, 30, 40, 50)
    samples[2]["pred"] = "A"  # the same option as the chosen answer: ordered last, then filtered
    pairs = [{"rejected": i, "agree": True} for i in (5, 4, 3, 2, 1)]
    records = pair_records(QUESTION, PROMPT, samples, 0, pairs, RULES)
    assert [p["rejected"] for p in pairs if not p.get("filtered")] == [5, 4, 3, 1]
    assert len(records) == 3  # max_pairs
    assert [r["rejected"] for r in records] == [
        f"<think>\n{LONG}\n</think>\n<answer>\n{x}\n</answer>" for x in "BDE"
    ]  # scores 10, 30, 40: the lowest first, re-wrapped
    assert records[0]["messages"] == build_messages(
        QUESTION, "citrus_open", open_question=QUESTION.question
    )


def test_the_recipe_preset_names_a_source_for_its_numbers():
    cfg = compose_config("pipeline", ["experiment=citrus_llama70b"])
    t = cfg.trainer
    assert (t.lr, t.max_epochs, t.global_batch_size, t.weight_decay, t.warmup_ratio) == (
        5e-6, 3, 512, 0.1, 0.05,
    )  # fmt: skip
    assert (tuple(t.betas), t.min_lr_ratio, t.max_grad_norm, cfg.seed) == ((0.9, 0.999), 0, 0, 42)
    pref = cfg.pipeline.preference
    assert pref.trainer.lr == 1e-6 and pref.data_params.max_length == 2048
    assert cfg.roles.strong.engine.served_model == "gpt-4o"
    assert cfg.roles.weak.engine.served_model == "gpt-4o-mini"
    assert (cfg.roles.policy.temperature, cfg.roles.policy.max_new_tokens) == (0.7, 4096)
    text = (REPO / "experiments" / "citrus_recipe.yaml").read_text()
    block = text.split("\ntrainer:\n", 1)[1].split("\n\n", 1)[0]
    settings = [line for line in block.splitlines() if not line.lstrip().startswith("#")]
    for line in settings:  # every trainer setting says where it comes from
        assert re.search(r"# \[(sft|dist|cpo|data|ours)\]", line), line


# ---------------------------------------------------------------- data mixtures and stages


def pair_file(path, n: int, tag: str, layout: str = "citrus") -> str:
    """n preference records: citrus's layout, or the original's chosen/rejected conversations."""
    rows = []
    for i in range(n):
        prompt = f"{tag} question {i}?"
        if layout == "citrus":
            rows.append({"id": f"{tag}{i}", "messages": [{"role": "user", "content": prompt}],
                         "chosen": f"good {tag}", "rejected": f"bad {tag}"})  # fmt: skip
        else:
            rows.append({side: [{"role": "user", "content": prompt},
                                {"role": "assistant", "content": f"{side} {tag}"}]
                         for side in ("chosen", "rejected")})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def mixture(tmp_path, *sources: str) -> list[str]:
    return [f"+data.mixture=[{','.join(sources)}]", f"paths.data_dir={tmp_path / 'cache'}"]


def test_a_mixture_draws_counts_and_weights_deterministically(tmp_path):
    from citrus.data.prepare import training_file
    from citrus.data.schema import load_records

    medical = pair_file(tmp_path / "medical.jsonl", 30, "med")
    general = pair_file(tmp_path / "general.jsonl", 20, "gen", layout="original")
    overrides = [
        "data=quickstart_pairs",
        *mixture(tmp_path, f"{{path:{medical},count:45}}", f"{{path:{general},weight:0.25}}"),
    ]
    cfg = compose_config("train", overrides)
    path = training_file(cfg.data, cfg.paths.data_dir)
    records = load_records(path, "preference")
    sources = [r["id"].split("/")[0] for r in records]
    assert sources.count("0") == 45 and sources.count("1") == 5  # 30 whole + 15 drawn; 20 x 0.25
    med_ids = {r["id"].split("#")[0] for r in records if r["id"].startswith("0/")}
    assert med_ids == {f"0/med{i}" for i in range(30)}  # every record once, 15 of them twice
    assert sources[:10] != ["0"] * 10  # shuffled together, not one source after the other
    again = training_file(compose_config("train", overrides).data, cfg.paths.data_dir)
    assert again == path and load_records(again, "preference") == records
    other = compose_config("train", [*overrides, "data.mixture_seed=7"])
    assert training_file(other.data, cfg.paths.data_dir) != path


def test_a_mixture_source_in_error_is_named(tmp_path):
    from citrus.data.prepare import training_file
    from citrus.data.schema import DataError

    medical = pair_file(tmp_path / "medical.jsonl", 3, "med")
    for source, message in (
        (f"{{path:{medical}}}", r"data.mixture\[0\] .*: set one of weight and count"),
        (f"{{path:{tmp_path / 'nope.jsonl'},count:2}}", r"data.mixture\[0\] .*does not exist"),
    ):
        cfg = compose_config("train", ["data=quickstart_pairs", *mixture(tmp_path, source)])
        with pytest.raises(DataError, match=message):
            training_file(cfg.data, cfg.paths.data_dir)


def test_training_on_a_mixture_records_every_source(tmp_path):
    from conftest import train_run

    medical = pair_file(tmp_path / "medical.jsonl", 12, "med")
    general = pair_file(tmp_path / "general.jsonl", 8, "gen", layout="original")
    overrides = [
        "experiment=quickstart", "logger=none", "data=quickstart_pairs", "algorithm=cpo_simpo",
        "trainer.max_steps=2", "trainer.micro_batch_size=4",
        *mixture(tmp_path, f"{{path:{medical},count:12}}", f"{{path:{general},count:4}}"),
    ]  # fmt: skip
    train_run(tmp_path / "run", overrides)
    inputs = json.loads((tmp_path / "run" / "run.json").read_text())["inputs"]
    roles = {v["role"] for v in inputs.values()}
    assert {"data/quickstart_pairs/mixture/0", "data/quickstart_pairs/mixture/1"} <= roles


def test_synthesized_traces_join_the_last_sft_stage(tmp_path):
    from citrus.pipeline import synthesized_into

    cfg = compose_config("pipeline", ["experiment=citrus_llama70b"])
    assert synthesized_into(cfg, 3) == 2  # Citrus_S3 is the synthesis output
    cfg.pipeline.synthesized_stage = 0
    assert synthesized_into(cfg, 3) == 0
    cfg.pipeline.synthesized_stage = 3
    with pytest.raises(ValueError, match="pipeline.synthesized_stage=3: the pipeline has 3"):
        synthesized_into(cfg, 3)
