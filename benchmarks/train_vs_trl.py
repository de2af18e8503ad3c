"""Training speed: citrus (Fabric loop) vs TRL's trainers, same tiny model, data and batch.

  sft   tokens/s over one epoch of the same quickstart SFT records: citrus with packing vs TRL's
        SFTTrainer with its defaults (bf16 autocast, gradient checkpointing, padding to the
        longest in the batch), and TRL without gradient checkpointing; peak memory of each
  cpo   seconds per optimizer step on the same preference pairs: citrus CPO-SimPO vs TRL's
        CPOTrainer (trl.experimental) with the same loss settings, its defaults and without
        gradient checkpointing
  citrus runs with trainer.precision=bf16-mixed, the precision of TRL's defaults
  flops achieved training FLOP/s (6 x parameters x tokens/s, Kaplan et al. 2020) as a share of
        this machine's measured fp32 matmul peak

Each measurement runs in its own process (so peak memory is its own); one invocation prints
every ratio. Run by hand on an idle machine:

    python benchmarks/train_vs_trl.py --examples 256 --cpo-steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from citrus.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", ["job=train", *overrides])


def citrus_run(overrides: list[str]) -> dict:
    from citrus.jobs import execute

    out = Path(tempfile.mkdtemp(prefix="citrus-bench-"))
    cfg = compose(overrides)
    return execute("train", cfg, out, overrides).metrics


def records(fmt: str, n: int, prompt: str = "quickstart") -> list[dict]:
    from citrus.data import quickstart

    make = quickstart.to_sft_record if fmt == "sft" else quickstart.to_preference_record
    return [make(q, prompt) for q in quickstart.generate("train", n, seed=0)]


def worker(kind: str, args: argparse.Namespace) -> dict:
    import torch

    torch.manual_seed(0)
    common = [
        "experiment=quickstart",
        "logger=none",
        f"data.quickstart.n_train={args.examples}",
        "trainer.log_every=1000",
        "trainer.precision=bf16-mixed",
    ]
    checkpointing = not kind.endswith("_no_ckpt")
    if kind == "citrus_sft":
        overrides = [
            *common,
            "trainer.packing=true",
            "model.max_length=1024",
            "trainer.micro_batch_size=2",
            "trainer.grad_accum_steps=1",
            "trainer.max_steps=0",
            "trainer.max_epochs=1",
        ]
        result = citrus_run(overrides)
        return {
            "seconds": result["train/seconds"],
            "padding_efficiency": result["train/padding_efficiency"],
        }
    if kind.startswith("trl_sft"):
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        from citrus.models import load_model, load_tokenizer

        cfg = compose(common)
        tok, model = load_tokenizer(cfg.model), load_model(cfg.model)
        data = Dataset.from_list(
            [{"messages": r["messages"]} for r in records("sft", args.examples)]
        )
        sft_args = SFTConfig(
            output_dir=tempfile.mkdtemp(),
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            num_train_epochs=1,
            learning_rate=2e-3,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            logging_steps=1000,
            max_length=1024,
            disable_tqdm=True,
            dataloader_num_workers=0,
            gradient_checkpointing=checkpointing,
        )
        trainer = SFTTrainer(model=model, args=sft_args, train_dataset=data, processing_class=tok)
        start = time.perf_counter()
        trainer.train()
        return {"seconds": time.perf_counter() - start}
    if kind == "citrus_cpo":
        overrides = [
            *common,
            "data=quickstart_pairs",
            "algorithm=cpo_simpo",
            "trainer.micro_batch_size=4",
            "trainer.grad_accum_steps=1",
            f"trainer.max_steps={args.cpo_steps}",
        ]
        result = citrus_run(overrides)
        return {"seconds": result["train/seconds"], "steps": args.cpo_steps}
    if kind.startswith("trl_cpo"):
        from datasets import Dataset
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        from citrus.models import load_model, load_tokenizer

        cfg = compose([*common, "data=quickstart_pairs", "algorithm=cpo_simpo"])
        tok, model = load_tokenizer(cfg.model), load_model(cfg.model)
        pairs = [
            {
                "prompt": r["messages"],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in records("preference", args.examples)
        ]
        a = cfg.algorithm
        # citrus's algorithm.loss -> TRL CPOTrainer's loss_type
        TRL_CPO_LOSS = {"cpo": "sigmoid", "cpo_hinge": "hinge", "cpo_ipo": "ipo", "simpo": "simpo"}
        cpo_args = CPOConfig(
            output_dir=tempfile.mkdtemp(),
            per_device_train_batch_size=4,
            gradient_accumulation_steps=1,
            max_steps=args.cpo_steps,
            learning_rate=1e-3,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            logging_steps=1000,
            max_length=1024,
            disable_tqdm=True,
            loss_type=TRL_CPO_LOSS[a.loss],
            beta=a.beta,
            simpo_gamma=a.simpo_gamma,
            cpo_alpha=a.cpo_alpha,
            dataloader_num_workers=0,
            gradient_checkpointing=checkpointing,
        )
        trainer = CPOTrainer(
            model=model, args=cpo_args, train_dataset=Dataset.from_list(pairs), processing_class=tok
        )
        start = time.perf_counter()
        trainer.train()
        return {"seconds": time.perf_counter() - start, "steps": args.cpo_steps}
    if kind == "matmul_peak":  # the best of 10 large matmuls, in fp32 and in bf16
        n, peaks = 2048, {}
        for dtype in (torch.float32, torch.bfloat16):
            a, b, best = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype), 0.0
            for _ in range(10):
                start = time.perf_counter()
                a @ b
                best = max(best, 2 * n**3 / (time.perf_counter() - start))
            peaks[str(dtype).removeprefix("torch.")] = best
        return peaks
    raise ValueError(kind)


def run_worker(kind: str, argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, *argv], capture_output=True, text=True
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--cpo-steps", type=int, default=20)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args)
        print(json.dumps({**result, "peak_rss_mib": peak_rss_mib()}))
        return

    import torch

    argv = ["--examples", str(args.examples), "--cpo-steps", str(args.cpo_steps)]
    kinds = (
        "citrus_sft",
        "trl_sft",
        "trl_sft_no_ckpt",
        "citrus_cpo",
        "trl_cpo",
        "trl_cpo_no_ckpt",
        "matmul_peak",
    )
    res = {k: run_worker(k, argv) for k in kinds}
    cfg = compose(["experiment=quickstart"])
    from citrus.models import load_model, load_tokenizer
    from citrus.train.data import tokenize_sft

    tok = load_tokenizer(cfg.model)
    tokens = sum(
        len(tokenize_sft(r, tok, 1024)["input_ids"]) for r in records("sft", args.examples)
    )
    params = sum(p.numel() for p in load_model(cfg.model).parameters())
    ours = tokens / res["citrus_sft"]["seconds"]
    print(
        f"tiny_llama ({params / 1e6:.1f}M parameters), "
        f"{args.examples} quickstart examples ({tokens} tokens), "
        f"{torch.get_num_threads()} threads, bf16 autocast"
    )
    print(
        f"SFT   citrus, packed (efficiency {res['citrus_sft']['padding_efficiency']:.2f})  "
        f"{ours:8.0f} tokens/s, "
        f"peak {res['citrus_sft']['peak_rss_mib']:.0f} MiB"
    )
    for kind, label in (
        ("trl_sft", "TRL SFTTrainer, defaults"),
        ("trl_sft_no_ckpt", "TRL, no grad checkpointing"),
    ):
        theirs = tokens / res[kind]["seconds"]
        print(
            f"      {label:<31} {theirs:8.0f} tokens/s, "
            f"peak {res[kind]['peak_rss_mib']:.0f} MiB: citrus "
            f"{ours / theirs:.2f}x the speed at "
            f"{res['citrus_sft']['peak_rss_mib'] / res[kind]['peak_rss_mib']:.2f}x the memory"
        )
    c = res["citrus_cpo"]["seconds"] / res["citrus_cpo"]["steps"]
    print(f"CPO   citrus CPO-SimPO {c * 1000:.0f} ms/step")
    for kind, label in (
        ("trl_cpo", "TRL CPOTrainer, defaults"),
        ("trl_cpo_no_ckpt", "TRL, no grad checkpointing"),
    ):
        t = res[kind]["seconds"] / res[kind]["steps"]
        print(f"      {label:<31} {t * 1000:.0f} ms/step: citrus {t / c:.2f}x the speed")
    peak = res["matmul_peak"]
    achieved = 6 * params * ours
    print(
        f"FLOPs matmul peak {peak['float32'] / 1e9:.0f} GFLOP/s fp32, "
        f"{peak['bfloat16'] / 1e9:.0f} GFLOP/s bf16; "
        f"citrus SFT achieves {achieved / 1e9:.1f} GFLOP/s (6ND) = "
        f"{achieved / peak['bfloat16']:.1%} of the bf16 peak"
    )


if __name__ == "__main__":
    main()
