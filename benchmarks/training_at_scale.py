"""What training at scale costs, measured on this machine in one run:

  precision  tokens/s of the same SFT run on the quickstart records (--model: the tiny Llama,
             or SmolLM2-135M-Instruct; stored in bf16, as hub checkpoints are) under bf16-mixed
             (float32 master weights, bf16 compute), bf16-true (pure bf16, the opt-in) and
             32-true; the ratio is the price of master weights (goal on GPUs: at most 15% slower
             than pure bf16)
  head       peak host memory and time of the output head's loss and its backward for one
             sequence at SmolLM2-135M's width (hidden 576, vocab 49152), 2048 and 8192 tokens:
             the full float32 log-softmax over (tokens x vocab) logits vs citrus's chunked head;
             and the whole training step's tokens/s with trainer.loss_chunk_size=0 vs 1024

Each measurement runs in its own process, so each peak is its own. Run by hand on an idle
machine:

    python benchmarks/training_at_scale.py --steps 40
    CITRUS_CACHE=/tmp/cc python benchmarks/training_at_scale.py --steps 10 \
        --model smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def precision_run(precision: str, steps: int, chunk: int = 1024, model: str = "tiny_llama") -> dict:
    from hydra import compose, initialize_config_dir

    from citrus.config import CONF_DIR, register_configs
    from citrus.jobs import execute
    from citrus.models import load_model, load_tokenizer

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        base = compose("config", ["job=train", "experiment=quickstart", f"model={model}"])
    stored = Path(tempfile.mkdtemp(prefix="citrus-bf16-")) / "model"
    load_model(base.model, "bfloat16").save_pretrained(stored)
    load_tokenizer(base.model).save_pretrained(stored)
    overrides = [
        "job=train", "experiment=quickstart", "logger=none", f"model={model}",
        f"model.path={stored}", "model.build=null", "model.gguf=null", "model.dtype=bfloat16",
        f"trainer.precision={precision}",
        "data.quickstart.n_train=256", "trainer.micro_batch_size=4", f"trainer.max_steps={steps}",
        "trainer.log_every=1000", "trainer.checkpoint_every=0", f"trainer.loss_chunk_size={chunk}",
    ]  # fmt: skip
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides)
    out = Path(tempfile.mkdtemp(prefix="citrus-bench-"))
    try:
        metrics = execute("train", cfg, out, overrides).metrics
    finally:  # the stored and the exported model
        shutil.rmtree(stored.parent, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    return {"tokens_per_s": metrics["train/tokens_per_s"]}


def head_run(chunk: int, tokens: int, hidden: int, vocab: int) -> dict:
    import torch

    from citrus.train.head import _head_forward
    from citrus.train.losses import next_token_logps

    torch.manual_seed(0)
    head = torch.nn.Linear(hidden, vocab, bias=False)
    states = torch.randn(1, tokens, hidden, requires_grad=True)
    ids = torch.randint(vocab, (1, tokens))
    before = peak_rss_mib()
    start = time.perf_counter()
    if chunk:  # the chunked head, as the model's forward calls it
        targets = torch.nn.functional.pad(ids[:, 1:], (0, 1))
        logps = _head_forward(head, targets, chunk, states)[:, :-1]
    else:  # full logits, then the float32 log-softmax
        logps = next_token_logps(head(states), ids)
    (-logps.sum()).backward()
    return {"peak_mib": peak_rss_mib() - before, "seconds": time.perf_counter() - start}


def measure(kind: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--steps", str(args.steps),
           "--model", args.model]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--model", default="tiny_llama")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *values = args.worker.split(":")
        if kind == "precision":
            result = precision_run(values[0], args.steps, int(values[1]), args.model)
        else:
            result = head_run(int(values[0]), tokens=int(values[1]), hidden=576, vocab=49152)
        print(json.dumps(result))
        return
    speed = {
        p: measure(f"precision:{p}:1024", args) for p in ("bf16-mixed", "bf16-true", "32-true")
    }
    speed["bf16-mixed, loss_chunk_size=0"] = measure("precision:bf16-mixed:0", args)
    print(f"{args.model}, quickstart records, batch 4, {args.steps} steps")
    for p, r in speed.items():
        print(f"train {p:30s} {r['tokens_per_s']:9.0f} tokens/s")
    mixed, pure = speed["bf16-mixed"]["tokens_per_s"], speed["bf16-true"]["tokens_per_s"]
    whole = speed["bf16-mixed, loss_chunk_size=0"]["tokens_per_s"]
    print(f"  bf16-mixed / bf16-true tokens/s: {mixed / pure:.2f}")
    print(f"  chunked head / whole head tokens/s (bf16-mixed): {mixed / whole:.2f}")
    for tokens in (2048, 8192):
        heads = {chunk: measure(f"head:{chunk}:{tokens}", args) for chunk in (0, 1024, 256)}
        for chunk, r in heads.items():
            name = "full log-softmax" if chunk == 0 else f"chunks of {chunk}"
            print(
                f"head {tokens} tokens, {name:18s} +{r['peak_mib']:7.1f} MiB  {r['seconds']:.3f} s"
            )
        for chunk in (1024, 256):
            memory = heads[chunk]["peak_mib"] / heads[0]["peak_mib"]
            seconds = heads[chunk]["seconds"] / heads[0]["seconds"]
            print(f"  {tokens} tokens, chunks of {chunk} / full: peak memory {memory:.2f}, "
                  f"time {seconds:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
