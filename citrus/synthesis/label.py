"""`citrus label`: rewrite each question in open-ended form and label its difficulty.

The open rewrite (the teacher role, synthesis.label.rewrite_prompt): by default the original's,
which shows the stem alone and keeps every word of it, changing only how it asks.
Difficulty (Citrus): a weak and a strong model answer the multiple-choice form with the
original's complexity prompt (synthesis.label.prompt); weak wrong -> hard; weak right but strong
wrong -> unknown; both right -> easy. The original asks gpt-4o (strong) and gpt-4o-mini (weak):
when both roles are the same model with the same settings, "unknown" cannot happen, and the job
says so. With k samples per model (synthesis.label.difficulty_samples) "right" means a pass rate
of at least 1/2; the pass rates are kept, so any other threshold can be applied later.

Writes labeled.jsonl: the questions in the unified schema, with metadata.open_question,
metadata.difficulty, metadata.pass_rate_{strong,weak} and metadata.label_audit.
"""

from __future__ import annotations

import logging
from typing import Any

from citrus.data.schema import write_jsonl_atomic
from citrus.evaluate.extract import extract_answer
from citrus.prompts import build_messages
from citrus.result import JobResult
from citrus.synthesis.common import RoleEngines, run_chunks
from citrus.synthesis.parsers import parse_open_question

log = logging.getLogger(__name__)


def difficulty(strong_rate: float, weak_rate: float) -> str:
    if weak_rate < 0.5:
        return "hard"
    return "unknown" if strong_rate < 0.5 else "easy"


def pass_rates(
    engine: Any, questions: list, prompt: str, k: int, seed: int
) -> tuple[list[float], list[list[str]]]:
    """Each question asked k times (seeds seed..seed+k-1): the share answered right, and the
    replies."""
    asked = [build_messages(q, prompt) for q in questions for _ in range(k)]
    replies = engine.generate(asked, seeds=[seed + j for _ in questions for j in range(k)])
    grouped = [replies[i * k : (i + 1) * k] for i in range(len(questions))]
    rates = [
        sum(extract_answer(r, q.options).letter == q.answer for r in rs) / k
        for q, rs in zip(questions, grouped)
    ]
    return rates, grouped


def label_chunk(cfg: Any, roles: RoleEngines, chunk: list) -> list[dict]:
    lc = cfg.synthesis.label
    rewrites = roles["teacher"].generate([build_messages(q, lc.rewrite_prompt) for q in chunk])
    strong, strong_replies = pass_rates(
        roles["strong"], chunk, lc.prompt, lc.difficulty_samples, cfg.seed
    )
    weak, weak_replies = pass_rates(
        roles["weak"], chunk, lc.prompt, lc.difficulty_samples, cfg.seed
    )
    records = []
    for q, rewrite, s, w, sr, wr in zip(
        chunk, rewrites, strong, weak, strong_replies, weak_replies
    ):
        open_form = parse_open_question(rewrite)
        record = q.to_dict()
        record["metadata"] = {
            **q.metadata,
            "open_question": open_form,
            "difficulty": difficulty(s, w),
            "pass_rate_strong": s,
            "pass_rate_weak": w,
            "label_audit": {"rewrite": rewrite, "strong": sr, "weak": wr},
        }
        # status is about the open rewrite; the difficulty label is always there
        record.update(
            status="kept" if open_form else "failed",
            reason=None if open_form else "unreadable open rewrite",
        )
        records.append(record)
    return records


def run(cfg: Any, run: Any) -> JobResult:
    if cfg.roles.strong == cfg.roles.weak:
        log.warning(
            "roles.strong and roles.weak are the same (%s): difficulty is easy or hard, never "
            "unknown; the original asks gpt-4o and gpt-4o-mini", cfg.roles.strong.name
        )  # fmt: skip

    def failed(q, reason):
        return {**q.to_dict(), "status": "failed", "reason": reason}

    done, counts, roles = run_chunks(
        cfg, run, "label", "labeled.progress.jsonl", label_chunk, failed
    )
    labeled = [r for r in done if "difficulty" in r.get("metadata", {})]
    # the labeled questions in the unified schema: a `synthesis.source` for synthesize and sample
    path = write_jsonl_atomic(
        run.dir / "labeled.jsonl",
        [{k: v for k, v in r.items() if k not in ("status", "reason")} for r in labeled],
    )
    levels = [r["metadata"]["difficulty"] for r in labeled]
    metrics = {
        **{f"label/{k}": v for k, v in counts.items()},
        **{f"label/{d}": levels.count(d) for d in ("easy", "unknown", "hard")},
        **roles.usage(),
    }
    return JobResult(metrics, {"labeled": path})
