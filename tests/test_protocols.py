"""Evaluation protocols (conf/protocol/): each fixes split, context, prompt, decoding and reading
as its source runs them; the original Citrus and HuatuoGPT-o1 readers; a sweep over protocols
and the report that puts them side by side."""

from __future__ import annotations

import json
import re

import pytest
from chat_server import ChatServer
from conftest import REPO, ROOT, SMOKE, compose_config, needs_files, run_cli

from citrus.data import quickstart
from citrus.data.benchmarks import load_task
from citrus.evaluate.answer_check import check_answers
from citrus.evaluate.evaluator import prediction_row, with_variant
from citrus.evaluate.extractors import EXTRACTORS
from citrus.prompts import build_messages

PROTOCOLS = sorted(p.stem for p in (REPO / "conf" / "protocol").glob("*.yaml"))
SOURCES = {
    "default": "citrus/config/groups.py",
    "citrus": "jdh-algo/Citrus",
    "huatuo": "FreedomIntelligence/HuatuoGPT-o1",
    "lm_eval": "lm_eval/tasks/medqa",
}


@pytest.mark.parametrize("name", PROTOCOLS)
def test_each_protocol_composes_names_itself_and_its_source(name):
    assert set(PROTOCOLS) == set(SOURCES)
    header = (REPO / "conf" / "protocol" / f"{name}.yaml").read_text().split("\nbenchmark:")[0]
    assert SOURCES[name] in header
    cfg = compose_config("evaluate", [f"protocol={name}", "benchmark=citrus_paper"])
    assert cfg.benchmark.protocol == name and cfg.benchmark.extractor in EXTRACTORS
    assert len(cfg.benchmark.tasks) == 15  # the group is untouched: a protocol changes how


def test_protocols_fix_decoding_and_reading_as_their_sources():
    citrus = compose_config("evaluate", ["protocol=citrus", "engine=vllm"])
    assert (citrus.engine.temperature, citrus.engine.max_new_tokens) == (0.7, 4096)
    assert (citrus.benchmark.prompt, citrus.benchmark.extractor) == ("citrus_pro", "citrus")
    assert citrus.benchmark.answer_check and citrus.engine.name == "vllm"
    huatuo = compose_config("evaluate", ["protocol=huatuo"])
    assert (huatuo.engine.temperature, huatuo.engine.top_p, huatuo.engine.max_new_tokens) == (
        0.5,
        0.9,
        2000,
    )
    lm_eval = compose_config("evaluate", ["protocol=lm_eval"])
    assert (lm_eval.benchmark.mode, lm_eval.benchmark.prompt) == ("likelihood", "mc_likelihood")
    default = compose_config("evaluate", [])
    assert (default.benchmark.protocol, default.engine.temperature) == ("default", 0.0)


def original_prompt(stem: str, options: str) -> str:
    """citrus_pro_inference.prompt of jdh-algo/Citrus, filled as its evaluation fills it."""
    return (
        "You are tasked with addressing a medical examination question. Please carefully read "
        "the question, provide a detailed thought process, and then present your final answer."
        f"\nHere is the question:\n<Question>\n{stem}\n{options}\n</Question>\n\nPlease begin "
        "your response.\n\nThe formatted output should be as follows:\n<think>\n[Insert Your "
        "Detailed Thought Process here]\n</think>\n<answer>\n[Insert Your Final Answer here]\n"
        "</answer>"
    )


def loaded(protocol: str, benchmark: str):
    overrides = [f"protocol={protocol}", f"benchmark={benchmark}", f"benchmark.data_root={ROOT}"]
    cfg = compose_config("evaluate", overrides)
    (name, task), = cfg.benchmark.tasks.items()  # fmt: skip
    return cfg, load_task(name, with_variant(task, cfg.benchmark), cfg.benchmark, ROOT).items


@needs_files
def test_citrus_protocol_asks_pubmedqa_as_the_original_all_1000_without_the_abstract():
    cfg, items = loaded("citrus", "pubmedqa")
    raw = json.loads((ROOT / "download_files/pubmedqa/ori_pqal.json").read_text())
    assert len(items) == 1000 and all(q.context is None for q in items)
    first = next(iter(raw))
    user = build_messages(items[0], cfg.benchmark.prompt)[-1]["content"]
    assert user == original_prompt(raw[first]["QUESTION"], "A. yes\nB. no\nC. maybe")
    _, default = loaded("default", "pubmedqa")
    assert len(default) == 500 and all(q.context for q in default)


@needs_files
def test_citrus_protocol_keeps_jmed_age_and_sex_in_the_originals_words():
    cfg, items = loaded("citrus", "jmed")
    stem = items[0].question
    assert stem.startswith("\n患者年龄：26岁\n患者性别：男\n患者病情摘要：患者为26岁男性")
    assert stem.endswith("？\n\n根据上述患者的情况，请问最有可能的诊断是什么？\n")
    user = build_messages(items[0], cfg.benchmark.prompt)[-1]["content"]
    options = "\n".join(f"{k}. {v}" for k, v in items[0].options.items())
    assert user == original_prompt(stem, options)
    _, default = loaded("default", "jmed")
    assert default[0].question.startswith("患者为26岁男性") and len(default) == len(items) == 1094


@needs_files
def test_lm_eval_protocol_scores_pubmedqa_words_after_its_abstract():
    cfg, items = loaded("lm_eval", "pubmedqa")
    from citrus.evaluate.evaluator import continuations_of, protocol
    from citrus.prompts import build_text

    task = with_variant(cfg.benchmark.tasks.pubmedqa, cfg.benchmark)
    how = protocol(task, cfg.benchmark)
    assert how == {"mode": "likelihood", "prompt": "lm_eval_pubmedqa", "continuation": "text"}
    raw = json.loads((ROOT / "download_files/pubmedqa/ori_pqal.json").read_text())
    first = raw[next(iter(raw))]
    # lm-eval's preprocess_pubmedqa.doc_to_text
    expected = "Abstract: {}\nQuestion: {}\nAnswer:".format(
        "\n".join(first["CONTEXTS"]), first["QUESTION"]
    )
    assert len(items) == 1000 and build_text(items[0], how["prompt"]) == expected
    assert continuations_of(items[0], "text") == [" yes", " no", " maybe"]


OPTIONS = {"A": "Acute pancreatitis", "B": "Pulmonary embolism", "C": "Aortic dissection"}


@pytest.mark.parametrize(
    "reply, pred, rule",
    [
        ("<think>\nTearing pain.\n</think>\n<answer>\nC\n</answer>", "C", "citrus_tag"),
        ("<answer>A</answer> then <answer>B</answer>", "B", "citrus_tag"),  # the last tag
        ("<answer>B.</answer>", "B.", "citrus_tag"),  # as written: wrong against "B"
        ("(C)", "(C)", "citrus_reply"),  # no tag: the whole reply
        ("<answer>B. Pulmonary embolism</answer>", None, "none"),  # > 3 characters: the check
        ("<answer>C", None, "none"),  # an unclosed tag is no tag: the whole reply is long
    ],
)
def test_the_original_citrus_reading(reply, pred, rule):
    got = EXTRACTORS["citrus"].read(reply, OPTIONS)
    assert (got.letter, got.rule) == (pred, rule)


@pytest.mark.parametrize(
    "reply, pred, rule",
    [
        # after "## Final Response", the last "answer is X"
        (
            "## Thinking\n\nThe answer is A at first.\n\n## Final Response\n\nSo the answer is C.",
            "C",
            "huatuo_answer_is",
        ),
        ("The answer is B, not A; the answer is C.", "C", "huatuo_answer_is"),
        ("I pick (B).", "B", "huatuo_letter"),
        ("A,B", "A", "huatuo_letter"),  # the comma is consumed with A, so B never stands alone
        ("答案是C。", "C", "huatuo_letter"),
        ("A patient like this has aortic dissection.", "C", "huatuo_text"),  # "A " is no letter
        ("pulmonary embolism, then acute pancreatitis", "A", "huatuo_text"),  # found last
        ("aortic dissectio", "C", "huatuo_similar"),  # the most similar text
    ],
)
def test_huatuogpt_o1_match_choice(reply, pred, rule):
    got = EXTRACTORS["huatuo"].read(reply, OPTIONS)
    assert (got.letter, got.rule) == (pred, rule)


class RawAReader:
    """Stands in for the original's post-processing model: it reads the <rawA> block of the
    Chinese answer-check prompt and replies with the letter of the option text it holds."""

    def __init__(self):
        self.prompts: list[list[dict]] = []

    def generate(self, conversations, on_batch=None, seeds=None):
        self.prompts += conversations
        replies = []
        for messages in conversations:
            text = messages[-1]["content"]
            shown = re.search(r"<rawA>\n(.*)\n</rawA>", text, re.S).group(1)
            lines = re.search(r"<OPS>\n(.*)\n</OPS>", text, re.S).group(1).splitlines()
            letter = next((line[0] for line in lines if line[3:].lower() in shown.lower()), "?")
            replies.append(f" {letter}\n")
        return replies


def test_citrus_answer_check_sees_the_answer_text_and_its_reply_is_the_answer(tmp_path):
    from test_answer_check import mapper_over_http

    questions = quickstart.generate("test", 3, seed=5)
    replies = [
        f"<think>long</think><answer>{questions[0].options['B']}</answer>",
        "<answer>D</answer>",
        f"I think it is {questions[2].options['A']}",
    ]
    reader = EXTRACTORS["citrus"]
    rows = [prediction_row("t", q, [], r, reader) for q, r in zip(questions, replies)]
    assert [r["pred"] for r in rows] == [None, "D", None]
    mapper = RawAReader()
    with ChatServer(mapper) as server:
        check_answers(
            mapper_over_http(server.url, tmp_path), rows, questions, "citrus_answer_check", reader
        )
    shown = sorted(m[-1]["content"] for m in mapper.prompts)  # requests run concurrently
    assert len(shown) == 2
    assert all(
        s.startswith("假设你是一名经验丰富的医学专家") and s.endswith("你的输出是:") for s in shown
    )
    # shown: the tag's text alone, not the reasoning; without a tag, the whole reply
    assert any(f"<rawA>\n{questions[0].options['B']}\n</rawA>" in s for s in shown)
    assert any(f"<rawA>\n{replies[2]}\n</rawA>" in s for s in shown)
    assert [(r["pred"], r["rule"]) for r in rows] == [
        ("B", "answer_check"),
        ("D", "citrus_tag"),
        ("A", "answer_check"),
    ]


@pytest.mark.long
def test_a_sweep_over_protocols_reports_them_side_by_side(tmp_path):
    result = run_cli(
        "evaluate",
        *SMOKE,
        "sweep=protocols",
        "engine.max_new_tokens=16",
        f"hydra.sweep.dir={tmp_path}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = {
        json.loads(p.read_text())["protocol"]: json.loads(p.read_text())
        for p in tmp_path.glob("*/metrics.json")
    }
    assert sorted(metrics) == ["citrus", "default", "huatuo", "lm_eval"]
    assert metrics["lm_eval"]["tasks"]["quickstart"]["rule/likelihood"] == 1.0
    assert metrics["huatuo"]["tasks"]["quickstart"]["extracted"] == 1.0  # it always names one
    assert metrics["citrus"]["sampling"]["temperature"] == 0.7
    for path in tmp_path.glob("*/run.json"):
        run = json.loads(path.read_text())
        assert f"protocol={run['metrics']['protocol']}" in run["overrides"]
    table = (tmp_path / "report" / "report.md").read_text().splitlines()
    header = next(line for line in table if line.startswith("| run"))
    assert header.startswith("| run | job | status | protocol | quickstart")
    for name, m in metrics.items():
        low, high = (m["tasks"]["quickstart"][k] for k in ("ci95_low", "ci95_high"))
        acc = m["tasks"]["quickstart"]["accuracy"]
        cell = f"{100 * acc:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"
        assert any(f"| {name} | {cell} |" in line for line in table), (name, cell)
