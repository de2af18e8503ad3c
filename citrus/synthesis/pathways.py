"""`citrus synthesize`: expert-pathway reasoning traces for SFT, the Citrus way.

Per question, for up to synthesis.synthesize.num_loop rounds (all questions of a chunk advance
together, one batched request per role per round):
  1. the teacher writes the next step of a clinician's reasoning on the open question;
  2. the critic, who knows the answer, rates the step valid (1) or not (0) with feedback that
     does not reveal the answer: a valid step joins the trace with its feedback; an invalid one
     is dropped and its feedback steers the next attempt;
  3. the judge says whether the trace is complete (every plausible diagnosis discussed, ready to
     conclude); the loop stops once it has said so complete_votes times.
Then 4. the teacher rewrites the trace as a first-person monologue that ends in the answer.
Only monologues whose extracted answer is the gold one are kept.

Writes pathways.jsonl (one audit record per question: every prompt, reply, rating, verdict and
round; status kept / dropped / failed with the reason) and sft.jsonl (the kept ones as SFT
records: `data.path=<run>/sft.jsonl` trains on them).
"""

from __future__ import annotations

from typing import Any

from citrus.data.schema import write_jsonl_atomic
from citrus.evaluate.extract import ANSWER_TAG, extract_answer
from citrus.jobs import JobResult
from citrus.prompts import build_messages
from citrus.synthesis.common import RoleEngines, gold, open_question, run_chunks
from citrus.synthesis.parsers import parse_rating, parse_step, parse_verdict


def render(trace: list[dict]) -> str:
    if not trace:
        return "(nothing yet)"
    return "\n\n".join(
        f"Step {i}: {t['step']}\nReviewer: {t['feedback']}".rstrip() for i, t in enumerate(trace, 1)
    )


def steer(note: str | None) -> str:
    return f"A reviewer rejected your last attempt: {note}\n\n" if note else ""


def new_state(q: Any) -> dict:
    return {"q": q, "trace": [], "note": None, "votes": 0, "rounds": []}


def advance(states: list[dict], roles: RoleEngines) -> None:
    """One round for every state: step, critic, judge (each one batched call)."""
    step_prompts = [
        build_messages(
            s["q"],
            "pathway_step",
            open_question=open_question(s["q"]),
            trace=render(s["trace"]),
            feedback=steer(s["note"]),
        )
        for s in states
    ]
    steps = roles["teacher"].generate(step_prompts)
    rounds = [
        {"step_prompt": p, "step_reply": r, "step": parse_step(r)}
        for p, r in zip(step_prompts, steps)
    ]
    rated = [(s, r) for s, r in zip(states, rounds) if r["step"]]
    critic_prompts = [
        build_messages(
            s["q"],
            "pathway_critic",
            open_question=open_question(s["q"]),
            answer=gold(s["q"]),
            trace=render(s["trace"]),
            step=r["step"],
        )
        for s, r in rated
    ]
    for (s, r), prompt, reply in zip(
        rated, critic_prompts, roles["critic"].generate(critic_prompts)
    ):
        rating, feedback = parse_rating(reply)
        r.update(critic_prompt=prompt, critic_reply=reply, rating=rating, feedback=feedback)
        if rating == 1:
            s["trace"].append({"step": r["step"], "feedback": feedback})
            s["note"] = None
        else:  # dropped; unreadable ratings count as invalid
            s["note"] = feedback or None
    judged = [(s, r) for s, r in zip(states, rounds) if s["trace"]]
    judge_prompts = [
        build_messages(
            s["q"], "pathway_judge", open_question=open_question(s["q"]), trace=render(s["trace"])
        )
        for s, _ in judged
    ]
    for (s, r), prompt, reply in zip(judged, judge_prompts, roles["judge"].generate(judge_prompts)):
        verdict = parse_verdict(reply)
        r.update(judge_prompt=prompt, judge_reply=reply, complete=verdict)
        s["votes"] += verdict is True
    for s, r in zip(states, rounds):
        s["rounds"].append(r)


def finish(states: list[dict], roles: RoleEngines, record_prompt: str) -> list[dict]:
    """The narrative rewrite of each trace, checked against the gold answer."""
    with_trace = [s for s in states if s["trace"]]
    prompts = [
        build_messages(s["q"], "pathway_narrative", answer=gold(s["q"]), trace=render(s["trace"]))
        for s in with_trace
    ]
    narratives = dict(zip(map(id, with_trace), zip(prompts, roles["teacher"].generate(prompts))))
    records = []
    for s in states:
        q = s["q"]
        audit = {
            "id": q.id,
            "question": q.to_dict(),
            "rounds": s["rounds"],
            "trace": s["trace"],
            "votes": s["votes"],
        }
        if id(s) not in narratives:
            records.append({**audit, "status": "dropped", "reason": "no valid step in any round"})
            continue
        prompt, narrative = narratives[id(s)]
        found = extract_answer(narrative, q.options)
        audit.update(
            narrative_prompt=prompt,
            narrative=narrative,
            extracted=found.letter,
            extract_rule=found.rule,
        )
        if "<think>" not in narrative or not ANSWER_TAG.search(narrative):
            records.append(
                {**audit, "status": "dropped", "reason": "narrative without <think> and <answer>"}
            )
        elif found.letter != q.answer:
            records.append(
                {
                    **audit,
                    "status": "dropped",
                    "reason": f"narrative concludes {found.letter}, gold is {q.answer}",
                }
            )
        else:
            sft = {
                "id": f"{q.id}/pathway",
                "messages": [
                    *build_messages(q, record_prompt),
                    {"role": "assistant", "content": narrative.strip()},
                ],
            }
            records.append({**audit, "status": "kept", "reason": None, "record": sft})
    return records


def synthesize_chunk(cfg: Any, roles: RoleEngines, chunk: list) -> list[dict]:
    pc = cfg.synthesis.synthesize
    states = [new_state(q) for q in chunk]
    for _ in range(pc.num_loop):
        active = [s for s in states if s["votes"] < pc.complete_votes]
        if not active:
            break
        advance(active, roles)
    return finish(states, roles, pc.prompt)


def run(cfg: Any, run: Any) -> JobResult:
    done, counts, roles = run_chunks(cfg, run, "synthesize", "pathways.jsonl", synthesize_chunk)
    # sft.jsonl is derived from the audit log, so it is never half-written
    sft = write_jsonl_atomic(
        run.dir / "sft.jsonl", [r["record"] for r in done if r["status"] == "kept"]
    )
    rounds = [len(r.get("rounds", [])) for r in done]
    metrics = {
        **{f"synthesize/{k}": v for k, v in counts.items()},
        "synthesize/mean_rounds": sum(rounds) / max(1, len(rounds)),
        **roles.usage(),
    }
    return JobResult(metrics, {"sft": sft, "pathways": run.dir / "pathways.jsonl"})
