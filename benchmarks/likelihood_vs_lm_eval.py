r"""Likelihood scoring speed: citrus vs lm-evaluation-harness (its HF backend), same items.

Scores the first --limit MedQA test questions with the tiny model in one process, both ways, on
the same "Question: ... Answer:" contexts and " A".." D" choices, checks that both pick the same
option on every item, and prints items/s and the ratio. Run by hand (needs `pip install lm-eval`
and the MedQA file):

    python benchmarks/likelihood_vs_lm_eval.py \
        --data-root ../shared/benchmarks/citrus-repo --limit 400
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra import compose, initialize_config_dir

from citrus.config import CONF_DIR, register_configs
from citrus.data.benchmarks import load_task
from citrus.engines.hf import HFEngine
from citrus.models import resolve_path
from citrus.prompts import build_text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default="tiny_qwen")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            [
                "job=evaluate",
                f"model={args.model}",
                "benchmark=medqa",
                f"benchmark.data_root={args.data_root}",
                f"benchmark.tasks.medqa.limit={args.limit}",
                f"engine.batch_size={args.batch_size}",
            ],
        )
    items = load_task("medqa", cfg.benchmark.tasks.medqa, cfg.benchmark, cfg.paths.data_dir).items
    contexts = [build_text(q, "mc_likelihood") for q in items]
    choices = [[f" {k}" for k in q.options] for q in items]

    engine = HFEngine(cfg.engine, cfg.model)
    engine.loglikelihoods(contexts[:4], choices[:4])  # warm-up
    start = time.perf_counter()
    ours = engine.loglikelihoods(contexts, choices)
    ours_s = time.perf_counter() - start

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(
        pretrained=resolve_path(cfg.model),
        batch_size=args.batch_size,
        device="cpu",
        dtype="float32",
        add_bos_token=engine.tokenizer.bos_token_id is not None,
    )
    requests = [
        Instance("loglikelihood", {}, (ctx, c), idx=j, doc_id=i)
        for i, (ctx, cs) in enumerate(zip(contexts, choices))
        for j, c in enumerate(cs)
    ]
    lm.loglikelihood(requests[:16], disable_tqdm=True)  # warm-up
    start = time.perf_counter()
    results = lm.loglikelihood(requests, disable_tqdm=True)
    theirs_s = time.perf_counter() - start
    theirs, k = [], 0
    for cs in choices:
        theirs.append([results[k + j][0] for j in range(len(cs))])
        k += len(cs)

    argmax = lambda scores: max(range(len(scores)), key=scores.__getitem__)  # noqa: E731
    same = sum(argmax(a) == argmax(b) for a, b in zip(ours, theirs))
    max_diff = max(abs(x - y) for a, b in zip(ours, theirs) for x, y in zip(a, b))
    n = len(items)
    print(
        f"MedQA likelihood scoring, {n} questions x 4 options, {args.model}, "
        f"batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"  citrus   {n / ours_s:8.1f} items/s  ({ours_s:.1f} s)")
    print(f"  lm-eval  {n / theirs_s:8.1f} items/s  ({theirs_s:.1f} s)")
    print(
        f"  speed-up {theirs_s / ours_s:.2f}x; same predicted option on {same}/{n} items; "
        f"max |delta log-likelihood| {max_diff:.2e}"
    )


if __name__ == "__main__":
    main()
