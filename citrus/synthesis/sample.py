"""`citrus sample`: preference pairs from a policy's own answers (the Citrus xPO data).

Per question: the policy answers synthesis.sample.num_samples times; each answer is mapped to an
option letter (the extraction rules, then the answer_mapper role for what they cannot read) and
marked correct or not. Then, with pairing=judges:
  - a pointwise judge scores every answer 0-100, given the reference answer and the verdict;
  - the best-scoring correct answer is chosen; up to `worst` answers scoring below `bad_below`
    are candidates for rejection;
  - a pairwise judge compares the chosen with each candidate (A/B order alternates, so position
    bias cannot favour one side); a pair is kept when its verdict agrees with the scores.
With pairing=rule: a correct answer is chosen and up to `worst` incorrect ones are rejected, no
judges.

Writes samples.jsonl (per question: every answer, its letter and rule, correctness, scores,
judge replies, the pairs; status kept / dropped / failed) and pairs.jsonl (preference records:
`data=quickstart_pairs data.path=<run>/pairs.jsonl` or any data.format=preference stage).
"""

from __future__ import annotations

from typing import Any

from citrus.data.schema import write_jsonl_atomic
from citrus.errors import ConfigError
from citrus.evaluate.answer_check import check_answers
from citrus.evaluate.evaluator import sampled_row
from citrus.jobs import JobResult
from citrus.prompts import build_messages
from citrus.synthesis.common import RoleEngines, gold, open_question, run_chunks
from citrus.synthesis.parsers import parse_preference, parse_score

PAIRINGS = ("judges", "rule")


def policy_prompt(q: Any, prompt: str) -> list[dict]:
    if prompt == "open_answer":
        return build_messages(q, prompt, open_question=open_question(q))
    return build_messages(q, prompt)


def rule_pairs(samples: list[dict], worst: int) -> tuple[int | None, list[dict], str | None]:
    correct = [i for i, s in enumerate(samples) if s["correct"]]
    wrong = [i for i, s in enumerate(samples) if not s["correct"]]
    if not correct or not wrong:
        return None, [], "no correct answer" if not correct else "no incorrect answer"
    return correct[0], [{"rejected": i, "agree": True} for i in wrong[:worst]], None


def judged_pairs(
    q: Any, samples: list[dict], roles: RoleEngines, sc: Any
) -> tuple[int | None, list[dict], str | None]:
    prompts = [
        build_messages(
            q,
            "xpo_pointwise",
            open_question=open_question(q),
            answer=gold(q),
            verdict="correct" if s["correct"] else "incorrect",
            response=s["response"],
        )
        for s in samples
    ]
    for s, reply in zip(samples, roles["judge"].generate(prompts)):
        s.update(score=parse_score(reply), score_reply=reply)
    scored = [i for i, s in enumerate(samples) if s["score"] is not None]
    best = max(
        (i for i in scored if samples[i]["correct"]),
        key=lambda i: samples[i]["score"],
        default=None,
    )
    if best is None:
        return None, [], "no correct answer with a readable score"
    low = sorted(
        (i for i in scored if samples[i]["score"] < sc.bad_below and i != best),
        key=lambda i: samples[i]["score"],
    )
    candidates = low[: sc.worst]
    if not candidates:
        return best, [], f"no answer scored below {sc.bad_below}"
    orders = [(best, i) if k % 2 == 0 else (i, best) for k, i in enumerate(candidates)]
    prompts = [
        build_messages(
            q,
            "xpo_pairwise",
            open_question=open_question(q),
            answer=gold(q),
            response_a=samples[a]["response"],
            response_b=samples[b]["response"],
        )
        for a, b in orders
    ]
    pairs = []
    for (a, b), i, reply in zip(orders, candidates, roles["judge"].generate(prompts)):
        verdict = parse_preference(reply)
        winner = {"A": a, "B": b}.get(verdict)
        pairs.append(
            {
                "rejected": i,
                "order": [a, b],
                "pairwise_reply": reply,
                "verdict": verdict,
                "agree": winner == best,
            }
        )
    return (
        best,
        pairs,
        None if any(p["agree"] for p in pairs) else "the pairwise judge agreed with no pair",
    )


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
        kept = [p for p in pairs if p["agree"]]
        record = {
            "id": q.id,
            "question": q.to_dict(),
            "prompt": prompt,
            "samples": samples,
            "chosen": best,
            "pairs": pairs,
            "status": "kept" if kept else "dropped",
            "reason": None if kept else reason,
        }
        record["records"] = [
            {
                "id": f"{q.id}-{j}",
                "messages": prompt,
                "chosen": samples[best]["response"],
                "rejected": samples[p["rejected"]]["response"],
            }
            for j, p in enumerate(kept)
        ]
        records.append(record)
    return records


def run(cfg: Any, run: Any) -> JobResult:
    if cfg.synthesis.sample.pairing not in PAIRINGS:
        raise ConfigError(
            f"synthesis.sample.pairing={cfg.synthesis.sample.pairing!r}: one of {list(PAIRINGS)}"
        )
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
