"""GRPO speed: citrus (algorithm=grpo in the Fabric loop, rollouts through engine=hf) vs TRL's
GRPOTrainer, on the same model, prompts, group size, completion limit, sampling and loss.

Measured on each side over --steps optimizer steps of --prompts prompts x --generations
completions (one micro-batch, no accumulation):
  step time       seconds per optimizer step: rollout, rewards, loss and update (citrus: the
                  training loop's time; TRL: from the first step's start to the last one's end)
  rollout tok/s   completion tokens sampled per second of generation (citrus: its rollout
                  timer; TRL: its _generate_single_turn, timed here)
Both read rewards with citrus's `letter` reward (the extraction ladder against the gold
option), sample at temperature 1 with top_k off, use the per-token (dapo) loss without a KL term,
float32 and no gradient checkpointing (TRL is also run with its default, gradient
checkpointing on). Completion lengths differ between the two samplers' draws: compare the
tokens/s, and the step time next to the mean completion length printed with it.

The model: --model-path, a model that answers the quickstart prompt (e.g. the SFT export of
`citrus pipeline experiment=quickstart_rl`, its sft/model), else the tiny Llama from config
(untrained: every completion runs to --max-new-tokens). One run prints every ratio:

    python benchmarks/grpo_vs_trl.py --model-path outputs/pipeline/<date>/<time>/sft/model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from citrus.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", ["job=train", *overrides])


def overrides(args: argparse.Namespace) -> list[str]:
    return [
        "experiment=quickstart",
        "logger=none",
        "algorithm=grpo",
        "data=quickstart_rl",
        "reward=letter",
        f"data.quickstart.n_train={args.prompts * args.steps}",
        *([f"model.path={args.model_path}"] if args.model_path else []),
        f"algorithm.num_generations={args.generations}",
        f"algorithm.max_new_tokens={args.max_new_tokens}",
        "algorithm.loss_type=dapo",
        f"trainer.micro_batch_size={args.prompts}",
        "trainer.grad_accum_steps=1",
        f"trainer.max_steps={args.steps}",
        "trainer.lr=1e-6",
        "trainer.log_every=1",
        "trainer.checkpoint_every=0",
        f"engine.batch_size={args.prompts * args.generations}",
    ]


def citrus_run(args: argparse.Namespace) -> dict:
    from citrus.jobs import execute

    work = Path(tempfile.mkdtemp(prefix="citrus-grpo-bench-"))
    try:
        cfg = compose(overrides(args))
        metrics = execute("train", cfg, work, overrides(args)).metrics
        rows = [json.loads(x) for x in (work / "train_log.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = args.prompts * args.generations
    tokens = sum(r["train/completions/mean_length"] * n for r in rows)
    rollout_s = sum(r["train/rollout/seconds"] for r in rows)
    return {
        "step_s": metrics["train/seconds"] / metrics["train/steps"],
        "rollout_tok_s": tokens / rollout_s,
        "mean_length": tokens / (n * len(rows)),
    }


def trl_run(args: argparse.Namespace, checkpointing: bool) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from citrus.data import quickstart
    from citrus.models import load_model, load_tokenizer
    from citrus.train import rewards

    cfg = compose(overrides(args))
    questions = quickstart.generate("train", args.prompts * args.steps, seed=0)
    records = [quickstart.to_prompt_record(q, "quickstart") for q in questions]
    rows = Dataset.from_list(
        [{"prompt": r["messages"], "question": json.dumps(r["question"])} for r in records]
    )
    ctx = rewards.RewardContext(cfg.reward, args.max_new_tokens)

    def letter(completions, question, **_):
        done = [rewards.Completion(c[0]["content"], 0, False, {"question": json.loads(q)})
                for c, q in zip(completions, question)]  # fmt: skip
        return rewards.REWARDS["letter"](done, ctx)

    class Clock(TrainerCallback):
        start = end = 0.0

        def on_step_begin(self, *a, **k):
            self.start = self.start or time.perf_counter()

        def on_step_end(self, *a, **k):
            self.end = time.perf_counter()

    clock = Clock()
    trainer = GRPOTrainer(
        model=load_model(cfg.model),
        reward_funcs=[letter],
        args=GRPOConfig(
            output_dir=tempfile.mkdtemp(prefix="trl-grpo-bench-"),
            per_device_train_batch_size=args.prompts * args.generations,
            num_generations=args.generations,
            max_completion_length=args.max_new_tokens,
            temperature=1.0,
            top_k=0,
            loss_type="dapo",
            beta=0.0,
            learning_rate=1e-6,
            max_steps=args.steps,
            gradient_checkpointing=checkpointing,
            bf16=False,
            use_cpu=True,
            report_to=[],
            logging_steps=1,
            save_strategy="no",
            shuffle_dataset=False,
        ),
        train_dataset=rows,
        processing_class=load_tokenizer(cfg.model),
        callbacks=[clock],
    )
    generated = {"seconds": 0.0, "tokens": 0}
    original = trainer._generate_single_turn

    def timed(*a, **k):
        started = time.perf_counter()
        out = original(*a, **k)
        generated["seconds"] += time.perf_counter() - started
        generated["tokens"] += sum(len(ids) for ids in out[0])  # completion ids
        return out

    trainer._generate_single_turn = timed
    trainer.train()
    shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
    n = args.prompts * args.generations * args.steps
    return {
        "step_s": (clock.end - clock.start) / args.steps,
        "rollout_tok_s": generated["tokens"] / generated["seconds"],
        "mean_length": generated["tokens"] / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    runs = {
        "citrus": citrus_run(args),
        "trl": trl_run(args, checkpointing=False),
        "trl (gradient checkpointing)": trl_run(args, checkpointing=True),
    }
    print(f"\n{args.prompts} prompts x {args.generations} completions, <= {args.max_new_tokens}"
          f" new tokens, {args.steps} steps, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'':30} {'step s':>8} {'rollout tok/s':>14} {'mean length':>12}")
    for name, r in runs.items():
        print(f"{name:30} {r['step_s']:8.2f} {r['rollout_tok_s']:14.0f} {r['mean_length']:12.1f}")
    ours = runs["citrus"]
    for name in ("trl", "trl (gradient checkpointing)"):
        r = runs[name]
        print(f"citrus / {name}: step time {ours['step_s'] / r['step_s']:.2f}x, rollout tokens/s "
              f"{ours['rollout_tok_s'] / r['rollout_tok_s']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
