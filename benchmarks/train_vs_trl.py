"""Training speed and memory: citrus (Fabric loop) vs TRL's trainers, same model, data, batch,
sequence length and precision.

  sft    tokens/s over --steps optimizer steps of --batch sequences of at most --max-length
         tokens: citrus with packing (rows of --max-length tokens, each example attending to
         itself only) and without (padded to the longest in the batch), vs TRL's SFTTrainer with
         its defaults (gradient checkpointing, padding to the longest in the batch) and without
         gradient checkpointing; the peak resident memory of each process. Both sides count the
         real (non-padding) input tokens of the batches they train on, and both train on the
         reply only (TRL: prompt-completion records). TRL reads the records in the order
         citrus's padded run draws them, so those two train on the very same batches; a packed
         row holds several records, so at the same batch the packed runs train on (and hold
         activations for) more tokens per step. Also citrus packed with gradient
         checkpointing, the like of TRL's default, for the memory comparison.
  cpo    seconds per optimizer step of CPO-SimPO on the same preference pairs in the same
         batches: citrus vs TRL's CPOTrainer (trl.experimental) with the same loss settings
         (loss, beta, gamma, alpha), its defaults (gradient checkpointing) and without it
  flops  achieved training FLOP/s of citrus SFT (6 x parameters x tokens/s, Kaplan et al. 2020)
         as a share of this machine's measured fp32 and bf16 matmul peaks (the best of torch
         matmuls at the model's shapes: the projections and MLP over a batch of tokens, a chunk
         of the output head, and a square 2048 one)

Data: with --huatuo, the HuatuoGPT-o1 demo records (198, fields Question, Complex_CoT,
Response): SFT on the question -> "## Thinking / ## Final Response" reply (HuatuoGPT-o1's own
layout); preference pairs with the record's Response as chosen and another record's Response
(a fixed derangement) as rejected, the Question as the prompt. Without it, the generated
quickstart records. Both sides use the model's chat template.

Each measurement runs in its own process (so its peak memory is its own); one invocation prints
every ratio (--only picks some measurements). Run by hand on an idle machine, for
SmolLM2-135M-Instruct (about 40 minutes on 2 CPU cores; the packed run without gradient
checkpointing peaks near 15 GB):

    CITRUS_CACHE=/tmp/cc python benchmarks/train_vs_trl.py --model smollm2-135m-instruct \\
        --huatuo ../shared/benchmarks/huatuogpt-o1/demo_data.json \\
        --precision 32-true --batch 4 --max-length 2048 --steps 10 --cpo-steps 10

and for the tiny default model on the quickstart records (a couple of minutes):

    python benchmarks/train_vs_trl.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

SFT_KINDS = (
    "citrus_sft_packed",
    "citrus_sft_packed_ckpt",
    "citrus_sft",
    "trl_sft",
    "trl_sft_no_ckpt",
)
CPO_KINDS = ("citrus_cpo", "trl_cpo", "trl_cpo_no_ckpt")
KINDS = (*SFT_KINDS, *CPO_KINDS, "matmul_peak")
# citrus's algorithm.loss -> TRL CPOTrainer's loss_type
TRL_CPO_LOSS = {"cpo": "sigmoid", "cpo_hinge": "hinge", "cpo_ipo": "ipo", "simpo": "simpo"}


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


# ---------------------------------------------------------------- records


def huatuo_rows(path: str) -> list[dict]:
    return json.loads(Path(path).read_text())


def sft_records(args: argparse.Namespace) -> list[dict]:
    """{"id", "messages"} chat records whose last message is the reply trained on."""
    if args.huatuo:
        return [
            {
                "id": f"huatuo-{i}",
                "messages": [
                    {"role": "user", "content": r["Question"]},
                    {
                        "role": "assistant",
                        "content": f"## Thinking\n\n{r['Complex_CoT']}\n\n"
                        f"## Final Response\n\n{r['Response']}",
                    },
                ],
            }
            for i, r in enumerate(huatuo_rows(args.huatuo))
        ]
    from citrus.data import quickstart

    questions = quickstart.generate("train", args.examples, seed=0)
    return [quickstart.to_sft_record(q, "quickstart") for q in questions]


def preference_records(args: argparse.Namespace) -> list[dict]:
    """{"id", "messages" (the prompt), "chosen", "rejected"}."""
    if args.huatuo:
        rows = huatuo_rows(args.huatuo)
        order = list(range(len(rows)))
        random.Random(0).shuffle(order)  # rejected: the next record's Response in this order
        other = {a: b for a, b in zip(order, order[1:] + order[:1])}
        return [
            {
                "id": f"huatuo-{i}",
                "messages": [{"role": "user", "content": r["Question"]}],
                "chosen": r["Response"],
                "rejected": rows[other[i]]["Response"],
            }
            for i, r in enumerate(rows)
        ]
    from citrus.data import quickstart

    questions = quickstart.generate("train", args.examples, seed=0)
    return [quickstart.to_preference_record(q, "quickstart") for q in questions]


def write_jsonl(records: list[dict], directory: Path) -> Path:
    path = directory / "records.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


# ---------------------------------------------------------------- the measured runs


def citrus_overrides(args: argparse.Namespace, batch: int, steps: int) -> list[str]:
    return [
        f"model={args.model}",
        "logger=none",
        f"trainer.precision={args.precision}",
        f"trainer.micro_batch_size={batch}",
        "trainer.grad_accum_steps=1",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=null",
        "trainer.log_every=1000000",
        "trainer.checkpoint_every=0",
        *([f"model.max_length={args.max_length}"] if args.max_length else []),
    ]


def citrus_train(overrides: list[str], records: list[dict]) -> dict:
    """Train in this process; the loop's seconds, real tokens, parameters (the export's time is
    not counted). The exported model is deleted afterwards."""
    from citrus.jobs import execute

    work = Path(tempfile.mkdtemp(prefix="citrus-bench-"))
    try:
        overrides = [*overrides, f"data.path={write_jsonl(records, work)}"]
        metrics = execute("train", compose(overrides), work / "run", overrides).metrics
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = metrics["train/seconds"]
    return {
        "seconds": seconds,
        "steps": metrics["train/steps"],
        "tokens": metrics["train/tokens_per_s"] * seconds,
        "padding_efficiency": metrics["train/padding_efficiency"],
        "truncated": metrics["train/truncated_records"],
    }


def load(overrides: list[str]):
    """The tokenizer and the model citrus trains, for TRL to train too."""
    from citrus.models import load_model, load_tokenizer

    cfg = compose(overrides)
    return load_tokenizer(cfg.model), load_model(cfg.model)


def trl_common(args: argparse.Namespace, batch: int, steps: int, checkpointing: bool) -> dict:
    return {
        "output_dir": tempfile.mkdtemp(prefix="trl-bench-"),
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": 1,
        "max_steps": steps,
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "logging_steps": 1000000,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "bf16": args.precision == "bf16-mixed",
        "gradient_checkpointing": checkpointing,
        "train_sampling_strategy": "sequential",  # the records come in citrus's order
    }


def in_citrus_order(records: list, args: argparse.Namespace, batch: int, steps: int) -> list:
    """The records citrus's padded run draws, in its order (its seeded permutation, epoch after
    epoch), for TRL to read sequentially: both sides train on the same batches."""
    from citrus.train.data import micro_batches

    cfg = compose(citrus_overrides(args, batch, steps))
    draws = micro_batches(len(records), cfg.trainer, cfg.seed, world=1, rank=0, start=0)
    return [records[i] for _ in range(steps) for i in next(draws)]


def timed_train(trainer) -> float:
    """Seconds of TRL's training loop: from on_train_begin (model, optimizer and data loader
    ready) to on_train_end, as citrus times its loop."""
    from transformers import TrainerCallback

    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            marks["begin"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            marks["end"] = time.perf_counter()

    trainer.add_callback(Clock())
    trainer.train()
    shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
    return marks["end"] - marks["begin"]


def trl_sft(args: argparse.Namespace, checkpointing: bool) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    max_length = args.max_length or compose([f"model={args.model}"]).model.max_length
    tok, model = load([f"model={args.model}"])
    # prompt-completion records: the loss on the reply only, as citrus's
    records = in_citrus_order(sft_records(args), args, args.batch, args.steps)
    rows = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in records]
    data = Dataset.from_list(rows)
    config = SFTConfig(
        **trl_common(args, args.batch, args.steps, checkpointing),
        max_length=max_length,
        include_num_input_tokens_seen="non_padding",  # the attention mask's sum, per batch
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok)
    seconds = timed_train(trainer)
    return {
        "seconds": seconds,
        "steps": trainer.state.global_step,
        "tokens": int(trainer.state.num_input_tokens_seen),
    }


def trl_cpo(args: argparse.Namespace, checkpointing: bool) -> dict:
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    cfg = compose([f"model={args.model}", "algorithm=cpo_simpo"])
    tok, model = load([f"model={args.model}"])
    pairs = [
        {
            "prompt": r["messages"],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in in_citrus_order(preference_records(args), args, args.cpo_batch, args.cpo_steps)
    ]
    a = cfg.algorithm
    config = CPOConfig(
        **trl_common(args, args.cpo_batch, args.cpo_steps, checkpointing),
        max_length=args.max_length or cfg.model.max_length,
        learning_rate=cfg.trainer.lr,
        loss_type=TRL_CPO_LOSS[a.loss],
        beta=a.beta,
        simpo_gamma=a.simpo_gamma,
        cpo_alpha=a.cpo_alpha,
        label_smoothing=a.label_smoothing,
    )
    trainer = CPOTrainer(
        model=model, args=config, train_dataset=Dataset.from_list(pairs), processing_class=tok
    )
    return {"seconds": timed_train(trainer), "steps": trainer.state.global_step}


def matmul_peak(args: argparse.Namespace) -> dict:
    """The best FLOP/s of torch matmuls at the trained model's shapes (a batch of 4096 tokens
    through its projections and MLP, both ways; a 1024-token chunk of the output head) and a
    square 2048 one, in fp32 and bf16: {dtype: {"peak": best, shape: its best}}, and the
    model's parameter count (from its config, nothing loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from citrus.models import resolve_path

    c = AutoConfig.from_pretrained(resolve_path(compose([f"model={args.model}"]).model))
    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(c).parameters())
    hidden, mlp = c.hidden_size, c.intermediate_size
    shapes = [
        (4096, hidden, mlp),
        (4096, mlp, hidden),
        (4096, hidden, hidden),
        (hidden, 4096, mlp),
        (1024, hidden, c.vocab_size),
        (2048, 2048, 2048),
    ]
    out: dict = {"params": params}
    for dtype in (torch.float32, torch.bfloat16):
        rates = {}
        for m, k, n in shapes:
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            c_ = torch.empty(m, n, dtype=dtype)
            torch.mm(a, b, out=c_)  # warm-up
            best, spent, runs = 0.0, 0.0, 0
            while runs < 5 or spent < 1.0:  # the best of at least 5 runs and a second
                start = time.perf_counter()
                torch.mm(a, b, out=c_)
                took = time.perf_counter() - start
                best, spent, runs = max(best, 2 * m * k * n / took), spent + took, runs + 1
            rates[f"{m}x{k}x{n}"] = best
        out[str(dtype).removeprefix("torch.")] = {"peak": max(rates.values()), **rates}
    return out


def worker(kind: str, args: argparse.Namespace) -> dict:
    import torch

    torch.manual_seed(0)
    sft = citrus_overrides(args, args.batch, args.steps)
    if kind.startswith("citrus_sft"):
        packing = kind.startswith("citrus_sft_packed")
        checkpointing = kind.endswith("_ckpt")
        overrides = [
            *sft,
            "data=quickstart",
            f"trainer.packing={str(packing).lower()}",
            f"trainer.gradient_checkpointing={str(checkpointing).lower()}",
        ]
        return citrus_train(overrides, sft_records(args))
    if kind.startswith("trl_sft"):
        return trl_sft(args, checkpointing=not kind.endswith("_no_ckpt"))
    if kind == "citrus_cpo":
        overrides = [
            *citrus_overrides(args, args.cpo_batch, args.cpo_steps),
            "data=quickstart_pairs",
            "algorithm=cpo_simpo",
        ]
        return citrus_train(overrides, preference_records(args))
    if kind.startswith("trl_cpo"):
        return trl_cpo(args, checkpointing=not kind.endswith("_no_ckpt"))
    if kind == "matmul_peak":
        return matmul_peak(args)
    raise ValueError(kind)


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


# ---------------------------------------------------------------- the report


def report_sft(res: dict, args: argparse.Namespace) -> None:
    def speed(kind: str) -> float:
        return res[kind]["tokens"] / res[kind]["seconds"]

    labels = {
        "citrus_sft_packed": "citrus, packed",
        "citrus_sft_packed_ckpt": "citrus, packed, grad checkpointing",
        "citrus_sft": "citrus, padded to the batch",
        "trl_sft": "TRL SFTTrainer, defaults (ckpt)",
        "trl_sft_no_ckpt": "TRL, no grad checkpointing",
    }
    for kind, label in labels.items():
        if kind in res:
            r = res[kind]
            extra = (
                f", padding efficiency {r['padding_efficiency']:.2f}"
                if "padding_efficiency" in r
                else ""
            )
            print(
                f"SFT   {label:<36} {speed(kind):8.1f} tokens/s, peak {r['peak_rss_mib']:6.0f} "
                f"MiB ({r['tokens']:.0f} tokens in {r['steps']} steps, {r['seconds']:.1f} s"
                f"{extra})"
            )
    for ours in ("citrus_sft_packed", "citrus_sft_packed_ckpt", "citrus_sft"):
        for theirs in ("trl_sft", "trl_sft_no_ckpt"):
            if ours in res and theirs in res:
                print(
                    f"      {labels[ours]} / {labels[theirs]}: "
                    f"{speed(ours) / speed(theirs):.2f}x the tokens/s at "
                    f"{res[ours]['peak_rss_mib'] / res[theirs]['peak_rss_mib']:.2f}x the "
                    "peak memory"
                )


def report_cpo(res: dict) -> None:
    if "citrus_cpo" not in res:
        return
    c = res["citrus_cpo"]["seconds"] / res["citrus_cpo"]["steps"]
    print(
        f"CPO   citrus CPO-SimPO {c * 1000:.0f} ms/step, "
        f"peak {res['citrus_cpo']['peak_rss_mib']:.0f} MiB"
    )
    for kind, label in (
        ("trl_cpo", "TRL CPOTrainer, defaults (ckpt)"),
        ("trl_cpo_no_ckpt", "TRL, no grad checkpointing"),
    ):
        if kind in res:
            t = res[kind]["seconds"] / res[kind]["steps"]
            print(
                f"      {label:<32} {t * 1000:.0f} ms/step, peak "
                f"{res[kind]['peak_rss_mib']:.0f} MiB: citrus takes {c / t:.2f}x the "
                f"step time ({t / c:.2f}x the speed)"
            )


def report_flops(res: dict) -> None:
    if "matmul_peak" not in res:
        return
    peak = res["matmul_peak"]
    for dtype in ("float32", "bfloat16"):
        shapes = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in peak[dtype].items() if k != "peak")
        print(f"FLOPs {dtype} matmul peak {peak[dtype]['peak'] / 1e9:.0f} GFLOP/s ({shapes})")
    params = peak["params"]
    for kind in ("citrus_sft_packed", "citrus_sft", "trl_sft_no_ckpt", "trl_sft"):
        if kind in res:
            achieved = 6 * params * res[kind]["tokens"] / res[kind]["seconds"]
            print(
                f"      {kind:<18} {achieved / 1e9:6.1f} GFLOP/s (6ND, N={params / 1e6:.1f}M) = "
                f"{achieved / peak['float32']['peak']:.1%} of the fp32 peak, "
                f"{achieved / peak['bfloat16']['peak']:.1%} of the bf16 peak"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny_llama")
    parser.add_argument("--huatuo", help="HuatuoGPT-o1 demo_data.json (else quickstart records)")
    parser.add_argument("--examples", type=int, default=256, help="quickstart records")
    parser.add_argument("--precision", default="bf16-mixed", choices=("32-true", "bf16-mixed"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=0, help="0: model.max_length")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cpo-batch", type=int, default=4)
    parser.add_argument("--cpo-steps", type=int, default=20)
    parser.add_argument("--only", default=",".join(KINDS), help="comma-separated measurements")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args)
        print(json.dumps({**result, "peak_rss_mib": peak_rss_mib()}))
        return

    import torch

    argv = sys.argv[1:]
    kinds = [k for k in args.only.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}; known {list(KINDS)}")
    res = {k: run_worker(k, argv) for k in kinds}
    data = f"HuatuoGPT-o1 records ({args.huatuo})" if args.huatuo else "quickstart records"
    print(
        f"{args.model}, {data}, {args.precision}, batch {args.batch}, length "
        f"{args.max_length or 'model.max_length'}, {args.steps} SFT steps, CPO batch "
        f"{args.cpo_batch} x {args.cpo_steps} steps, {torch.get_num_threads()} threads"
    )
    report_sft(res, args)
    report_cpo(res)
    report_flops(res)


if __name__ == "__main__":
    main()
