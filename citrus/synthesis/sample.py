"""`citrus sample`: preference pairs from a policy's own answers (the Citrus xPO data).

Per question: the policy answers synthesis.sample.num_samples times; each answer is mapped to an
option letter (the extraction rules, then the answer_mapper role for what they cannot read) and
marked correct or not. Then, with pairing=judges, the original's rules
(jdh-algo/Citrus src/task/single_task/single_task_xpo_sample.py, xpo_sample_process.py, utils.py):
  - a pointwise judge scores every answer 0-100 with the original's rubric (base 60 for a right
    conclusion, bonuses up to +30, deductions up to -90, a wrong answer at most 30);
  - the best-scored answer is the chosen one if it scores at least best_min (60); up to `worst`
    (5) of the lowest-scored answers scoring under bad_below (60) are candidates for rejection;
  - a pairwise judge compares the chosen with each candidate: 0 (a tie), 1 or 2, and a score
    for each; a pair stands when the judge prefers the chosen answer, scores it higher, and the
    pointwise scores agree;
  - post-filters drop pairs whose reasoning is short (< min_think_chars), too long
    (> max_chars), whose two answers are the same, in a foreign script or the wrong language,
    or that hold a refusal or a leftover template tag; at most max_pairs (3) stay per question,
    different answers and the lowest-scored rejections first;
  - the pair is written with the Citrus prompt on the open question and both replies re-wrapped
    as <think>..</think><answer>..</answer> (rewrap).
With pairing=rule: a correct answer is chosen and up to `worst` incorrect ones are rejected, no
judges (citrus's, for models too small to judge).

Writes samples.jsonl (per question: every answer, its letter and rule, correctness, scores,
judge replies, the pairs and why any was dropped; status kept / dropped / failed) and
pairs.jsonl (preference records: `data=quickstart_pairs data.path=<run>/pairs.jsonl` or any
data.format=preference stage).
"""

from __future__ import annotations

import re
from typing import Any

from citrus.data.schema import write_jsonl_atomic
from citrus.errors import ConfigError
from citrus.evaluate.answer_check import check_answers
from citrus.evaluate.evaluator import sampled_row
from citrus.prompts import build_messages
from citrus.result import JobResult
from citrus.synthesis.common import RoleEngines, open_question, run_chunks
from citrus.synthesis.parsers import parse_pairwise, parse_score, rewrapped, split_reply

PAIRINGS = ("judges", "rule")
ORDERS = ("fixed", "alternate")
FOREIGN_SCRIPT = re.compile(r"[\u3040-\u30ff\uac00-\ud7af\u1100-\u11ff\u0600-\u06ff]")  # ja, ko, ar
CJK = re.compile(r"[\u4e00-\u9fff]")
REFUSALS = ("Sure, here", "I'm sorry")  # in the chosen side (XpoDataCheck)
# what must not be left inside the reasoning: template tags and placeholders
LEFTOVERS = ("<think>", "</think>", "<answer>", "</answer>", "<|im_start|>", "<|im_end|>",
             "[Insert Your Detailed")  # fmt: skip


def policy_prompt(q: Any, prompt: str) -> list[dict]:
    if prompt in ("open_answer", "citrus_open_expert", "citrus_open"):
        return build_messages(q, prompt, open_question=open_question(q))
    return build_messages(q, prompt)


def rule_pairs(samples: list[dict], worst: int) -> tuple[int | None, list[dict], str | None]:
    correct = [i for i, s in enumerate(samples) if s["correct"]]
    wrong = [i for i, s in enumerate(samples) if not s["correct"]]
    if not correct or not wrong:
        return None, [], "no correct answer" if not correct else "no incorrect answer"
    return correct[0], [{"rejected": i, "agree": True} for i in wrong[:worst]], None


def pick(samples: list[dict], sc: Any) -> tuple[int | None, list[int], str | None]:
    """The chosen answer and the rejection candidates from the pointwise scores, by the
    original's rules: the best-scored answer (sorted high to low, an unreadable score left out),
    if it reaches best_min; candidates among the `worst` lowest that score under bad_below."""
    ranked = sorted((i for i, s in enumerate(samples) if s["score"] is not None),
                    key=lambda i: -samples[i]["score"])  # fmt: skip
    if sc.best_correct:
        ranked = [i for i in ranked if samples[i]["correct"]] + [
            i for i in ranked if not samples[i]["correct"]
        ]
    if len(ranked) < 2:
        return None, [], "fewer than two readable scores"
    best = ranked[0]
    if sc.best_correct and not samples[best]["correct"]:
        return None, [], "no correct answer with a readable score"
    if samples[best]["score"] < sc.best_min:
        return None, [], f"the best answer scored {samples[best]['score']} < {sc.best_min}"
    tail = ranked[-sc.worst :] if sc.worst else []
    bad = [i for i in tail if samples[i]["score"] < sc.bad_below and i != best]
    if not bad:
        return best, [], f"no answer scored below {sc.bad_below}"
    return best, sorted(bad, key=lambda i: samples[i]["score"]), None


def pair_stands(pair: dict, samples: list[dict], best: int) -> bool:
    """The pairwise judge prefers the chosen answer (not a tie), scores it higher, and the
    pointwise scores agree (the original's valid_status)."""
    chosen_first = pair["order"][0] == best
    chosen_pos, rejected_pos = (1, 2) if chosen_first else (2, 1)
    scores = {1: pair["score_1"], 2: pair["score_2"]}
    return (
        pair["better"] == chosen_pos
        and None not in scores.values()
        and scores[chosen_pos] > scores[rejected_pos]
        and samples[best]["score"] > samples[pair["rejected"]]["score"]
    )


def judged_pairs(
    q: Any, samples: list[dict], roles: RoleEngines, sc: Any
) -> tuple[int | None, list[dict], str | None]:
    verdict = lambda s: "correct" if s["correct"] else "incorrect"  # noqa: E731
    common = {"open_question": open_question(q), "answer": q.answer}
    prompts = [
        build_messages(q, "xpo_pointwise", verdict=verdict(s), response=s["response"], **common)
        for s in samples
    ]
    for s, reply in zip(samples, roles["judge"].generate(prompts)):
        s.update(score=parse_score(reply), score_reply=reply)
    best, candidates, reason = pick(samples, sc)
    if not candidates:
        return best, [], reason
    orders = [
        (best, i) if sc.order == "fixed" or k % 2 == 0 else (i, best)
        for k, i in enumerate(candidates)
    ]
    prompts = [
        build_messages(
            q,
            "xpo_pairwise",
            response_a=samples[a]["response"],
            verdict_a=verdict(samples[a]),
            response_b=samples[b]["response"],
            verdict_b=verdict(samples[b]),
            **common,
        )
        for a, b in orders
    ]
    pairs = []
    for (a, b), i, reply in zip(orders, candidates, roles["judge"].generate(prompts)):
        better, score_1, score_2 = parse_pairwise(reply)
        pair = {"rejected": i, "order": [a, b], "pairwise_reply": reply, "better": better,
                "score_1": score_1, "score_2": score_2}  # fmt: skip
        pair["agree"] = pair_stands(pair, samples, best)
        pairs.append(pair)
    if not any(p["agree"] for p in pairs):
        return best, pairs, "the pairwise judge upheld no pair"
    return best, pairs, None


def rejection(q: Any, prompt: list[dict], chosen: dict, rejected: dict, sc: Any) -> str | None:
    """Why a pair fails the post-filters (XpoDataCheck), or None."""
    sides = {"chosen": chosen, "rejected": rejected}
    asked = prompt[-1]["content"]
    for side, s in sides.items():
        think, answer = split_reply(s["response"])
        if len(think) < sc.min_think_chars:
            return f"{side}: reasoning under {sc.min_think_chars} characters"
        if not answer:
            return f"{side}: no <answer>"
        if any(tag in think for tag in LEFTOVERS):
            return f"{side}: a template tag left in the reasoning"
        if FOREIGN_SCRIPT.search(s["response"]):
            return f"{side}: Japanese, Korean or Arabic script"
        if len(asked) + len(s["response"]) > sc.max_chars:
            return f"{side}: over {sc.max_chars} characters"
    if chosen["pred"] is not None and chosen["pred"] == rejected["pred"]:
        return "both answers are the same option"
    if split_reply(chosen["response"])[1] == split_reply(rejected["response"])[1]:
        return "both answers are the same text"
    if bool(CJK.search(open_question(q))) != bool(CJK.search(chosen["response"])):
        return "chosen: not in the question's language"
    if any(r in chosen["response"] for r in REFUSALS):
        return "chosen: a refusal or a preamble"
    return None


def pair_records(q: Any, prompt: list[dict], samples: list[dict], best: int, pairs: list[dict],
                 sc: Any) -> list[dict]:  # fmt: skip
    """The kept pairs as preference records, filtered, ordered and capped."""
    stood = [p for p in pairs if p["agree"]]
    if sc.pairing == "judges":
        for p in stood:
            p["filtered"] = rejection(q, prompt, samples[best], samples[p["rejected"]], sc)
        stood = [p for p in stood if not p["filtered"]]
        # different answers first, then the lowest-scored rejection (format_xpo_data)
        stood.sort(key=lambda p: (samples[p["rejected"]]["pred"] == samples[best]["pred"],
                                  samples[p["rejected"]]["score"]))  # fmt: skip
        stood = stood[: sc.max_pairs]
    if sc.rewrap and sc.pairing == "judges":  # the original's rules; rule pairs stay as asked
        messages = build_messages(q, "citrus_open", open_question=open_question(q))
        reply = rewrapped
    else:
        messages, reply = prompt, lambda r: r  # noqa: E731
    return [
        {
            "id": f"{q.id}-{j}",
            "messages": messages,
            "chosen": reply(samples[best]["response"]),
            "rejected": reply(samples[p["rejected"]]["response"]),
        }
        for j, p in enumerate(stood)
    ]


def sample_chunk(cfg: Any, roles: RoleEngines, chunk: list) -> list[dict]:
    sc, n = cfg.synthesis.sample, cfg.synthesis.sample.num_samples
    prompts = [policy_prompt(q, sc.prompt) for q in chunk]
    replies = roles["policy"].generate(
        [p for p in prompts for _ in range(n)],
        seeds=[cfg.seed + k for _ in prompts for k in range(n)],
    )
    # rows in the evaluator's shape (samples read by the extraction rules), so the answer check
    # can map the rest
    rows = [
        sampled_row("sample", q, p, replies[i * n : (i + 1) * n])
        for i, (q, p) in enumerate(zip(chunk, prompts))
    ]
    check_answers(roles["answer_mapper"], rows, chunk)
    records = []
    for q, prompt, row in zip(chunk, prompts, rows):
        samples = row["samples"]
        for s in samples:
            s["correct"] = s["pred"] == q.answer
        if sc.pairing == "rule":
            best, pairs, reason = rule_pairs(samples, sc.worst)
        else:
            best, pairs, reason = judged_pairs(q, samples, roles, sc)
        made = pair_records(q, prompt, samples, best, pairs, sc) if best is not None else []
        if not made and reason is None:
            reason = "every pair failed a post-filter"
        records.append(
            {
                "id": q.id,
                "question": q.to_dict(),
                "prompt": prompt,
                "samples": samples,
                "chosen": best,
                "pairs": pairs,
                "status": "kept" if made else "dropped",
                "reason": None if made else reason,
                "records": made,
            }
        )
    return records


def run(cfg: Any, run: Any) -> JobResult:
    sc = cfg.synthesis.sample
    for key, choices in (("pairing", PAIRINGS), ("order", ORDERS)):
        if sc[key] not in choices:
            raise ConfigError(f"synthesis.sample.{key}={sc[key]!r}: one of {list(choices)}")
    done, counts, roles = run_chunks(cfg, run, "sample", "samples.jsonl", sample_chunk)
    pairs = [p for r in done for p in r.get("records", [])]
    pairs_path = write_jsonl_atomic(run.dir / "pairs.jsonl", pairs)  # derived from samples.jsonl
    answers = [s for r in done for s in r.get("samples", [])]
    metrics = {
        **{f"sample/{k}": v for k, v in counts.items()},
        "sample/pairs": len(pairs),
        "sample/accuracy": sum(s["correct"] for s in answers) / max(1, len(answers)),
        **roles.usage(),
    }
    return JobResult(metrics, {"pairs": pairs_path, "samples": run.dir / "samples.jsonl"})
