"""`citrus synthesize`: expert-pathway reasoning traces for SFT, the Citrus way.

Per question, for up to synthesis.synthesize.num_loop rounds (all questions of a chunk advance
together, one batched request per role per round):
  1. the teacher writes reasoning on the open question: with step_context=question (the
     original) a fresh stream-of-consciousness differential each round, in <Reasoning> tags;
     with step_context=trace (citrus) the next single step after the accepted ones, steered by
     the last rejected step's feedback;
  2. the critic, who knows the answer, rates it valid (1) or not (0) with feedback that does not
     reveal the answer: a valid step joins the trace with its feedback; an invalid one is dropped
     (and, with step_context=trace, its feedback steers the next attempt);
  3. the judge says whether the trace is complete (every plausible diagnosis discussed, ready to
     conclude); the loop stops once it has said so complete_votes times.
Then 4. the teacher rewrites the trace as a first-person monologue that ends in the answer.
record_form=open (the original) writes the Citrus prompt on the open question -> <think>
narrative + the answer in words; record_form=mc (citrus) the expert prompt on the
multiple-choice form -> <think> + the option. keep=all (the original) keeps every narrative;
keep=gold (citrus) only those that read as the gold option.

Writes pathways.jsonl (one audit record per question: every prompt, reply, rating, verdict and
round; status kept / dropped / failed with the reason) and sft.jsonl (the kept ones as SFT
records: `data.path=<run>/sft.jsonl` trains on them).
"""

from __future__ import annotations

from typing import Any

from citrus.data.schema import write_jsonl_atomic
from citrus.errors import ConfigError
from citrus.evaluate.extract import ANSWER_TAG, extract_answer
from citrus.prompts import build_messages
from citrus.result import JobResult
from citrus.synthesis.common import RoleEngines, gold, open_question, run_chunks
from citrus.synthesis.parsers import parse_rating, parse_step, parse_verdict, rewrapped

# the prompts of each setting (citrus/prompts/)
STEP_PROMPTS = {"question": "pathway_monologue", "trace": "pathway_step"}
JUDGE_PROMPTS = {"trace": "pathway_judge_trace", "question_trace": "pathway_judge"}
NARRATIVE_PROMPTS = {"open": "pathway_narrative_open", "mc": "pathway_narrative"}
RECORD_PROMPTS = {"open": "citrus_open", "mc": "citrus_expert"}
KEEP = ("all", "gold")


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


def answer_given(q: Any, form: str) -> str:
    """The answer the critic and the narrator know: its text (open form, the original gives the
    option's value) or its letter and text (mc)."""
    return q.answer_text if form == "open" else gold(q)


def step_messages(s: dict, context: str) -> list[dict]:
    q = open_question(s["q"])
    if context == "question":
        return build_messages(s["q"], STEP_PROMPTS[context], open_question=q)
    trace, feedback = render(s["trace"]), steer(s["note"])
    return build_messages(
        s["q"], STEP_PROMPTS[context], open_question=q, trace=trace, feedback=feedback
    )


def judge_messages(s: dict, context: str) -> list[dict]:
    if context == "trace":
        return build_messages(s["q"], JUDGE_PROMPTS[context], trace=render(s["trace"]))
    q = open_question(s["q"])
    return build_messages(s["q"], JUDGE_PROMPTS[context], open_question=q, trace=render(s["trace"]))


def advance(states: list[dict], roles: RoleEngines, pc: Any, seed: int) -> None:
    """One round for every state: step, critic, judge (each one batched call). Each round asks
    with its own seed: the original's step prompt is the same every round, and its rounds are
    meant to be fresh samples, not one reply repeated (or served again from a cache)."""
    step_prompts = [step_messages(s, pc.step_context) for s in states]
    seeds = [seed + len(s["rounds"]) for s in states]
    steps = roles["teacher"].generate(step_prompts, seeds=seeds)
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
            answer=answer_given(s["q"], pc.record_form),
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
    judge_prompts = [judge_messages(s, pc.judge_context) for s, _ in judged]
    for (s, r), prompt, reply in zip(judged, judge_prompts, roles["judge"].generate(judge_prompts)):
        verdict = parse_verdict(reply)
        r.update(judge_prompt=prompt, judge_reply=reply, complete=verdict)
        s["votes"] += verdict is True
    for s, r in zip(states, rounds):
        s["rounds"].append(r)


def narrative_messages(s: dict, form: str) -> list[dict]:
    answer, trace = answer_given(s["q"], form), render(s["trace"])
    return build_messages(s["q"], NARRATIVE_PROMPTS[form], answer=answer, trace=trace)


def as_think_answer(narrative: str, form: str) -> str:
    """The open form's narrative in the original training data's layout (rewrapped); a reply
    that gave only the <answer> tag (the original's narrator asks for no <think>) has what
    precedes it as its reasoning. A narrative without <answer> is left as written."""
    text = narrative.strip()
    if form != "open" or not ANSWER_TAG.search(text):
        return text
    if "<think>" in text.lower() and "</think>" not in text.lower():
        return text  # an unclosed reasoning block: left as written rather than lost
    if "<think>" not in text.lower():
        start = text.lower().find("<answer>")
        text = f"<think>{text[:start]}</think>{text[start:]}"
    return rewrapped(text)


def sft_record(q: Any, narrative: str, form: str) -> dict:
    prompt = RECORD_PROMPTS[form]
    asked = (
        build_messages(q, prompt, open_question=open_question(q))
        if form == "open"
        else build_messages(q, prompt)
    )
    reply = {"role": "assistant", "content": narrative}
    return {"id": f"{q.id}/pathway", "messages": [*asked, reply]}


def verdict(narrative: str, q: Any, found: Any, keep: str) -> str | None:
    """Why a narrative is dropped, or None when it is kept."""
    if keep == "all":
        return None
    if "<think>" not in narrative or not ANSWER_TAG.search(narrative):
        return "narrative without <think> and <answer>"
    if found.letter != q.answer:
        return f"narrative concludes {found.letter}, gold is {q.answer}"
    return None


def finish(states: list[dict], roles: RoleEngines, pc: Any) -> list[dict]:
    """The narrative rewrite of each trace, kept by pc.keep. The original rewrites every trace,
    an empty one too (every step rejected); citrus has nothing to rewrite then."""
    with_trace = [s for s in states if s["trace"] or pc.keep == "all"]
    prompts = [narrative_messages(s, pc.record_form) for s in with_trace]
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
        narrative = as_think_answer(narrative, pc.record_form)
        found = extract_answer(narrative, q.options)
        audit.update(
            narrative_prompt=prompt,
            narrative=narrative,
            extracted=found.letter,
            extract_rule=found.rule,
        )
        reason = verdict(narrative, q, found, pc.keep)
        if reason:
            records.append({**audit, "status": "dropped", "reason": reason})
        else:
            record = sft_record(q, narrative, pc.record_form)
            records.append({**audit, "status": "kept", "reason": None, "record": record})
    return records


def check(pc: Any) -> None:
    for key, choices in (
        ("step_context", STEP_PROMPTS),
        ("judge_context", JUDGE_PROMPTS),
        ("record_form", RECORD_PROMPTS),
        ("keep", KEEP),
    ):
        if pc[key] not in choices:
            raise ConfigError(f"synthesis.synthesize.{key}={pc[key]!r}: one of {list(choices)}")


def synthesize_chunk(cfg: Any, roles: RoleEngines, chunk: list) -> list[dict]:
    pc = cfg.synthesis.synthesize
    states = [new_state(q) for q in chunk]
    for _ in range(pc.num_loop):
        active = [s for s in states if s["votes"] < pc.complete_votes]
        if not active:
            break
        advance(active, roles, pc, cfg.seed)
    return finish(states, roles, pc)


def run(cfg: Any, run: Any) -> JobResult:
    check(cfg.synthesis.synthesize)
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
