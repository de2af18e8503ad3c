"""The quickstart across seeds and CPU kernel sets: does its story hold on any machine?

Runs `citrus pipeline experiment=quickstart seed=S` for every seed under every kernel set
(ATEN_CPU_CAPABILITY=avx2 / avx512 / default), each on a fresh cache (the tiny model is built
again under that kernel set), and records per run: accuracy before, after SFT and after the
preference stage, the held-out pairs' reward margin and ranking accuracy before and after the
preference stage, and the wall time. Runs append to <out>/runs.jsonl, so a killed study resumes.

    python benchmarks/quickstart_study.py                       # 5 seeds x {avx2, avx512}
    python benchmarks/quickstart_study.py --seeds 1 2 --kernels default -- trainer.max_steps=600
    python benchmarks/quickstart_study.py --write docs/results.md   # the summary into the docs

Arguments after `--` are extra overrides for every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARGIN, RANKED = "preference/val/rewards/margins", "preference/val/rewards/accuracies"
NAN = float("nan")
BEGIN, END = "<!-- quickstart-study:begin -->", "<!-- quickstart-study:end -->"


def one_run(seed: int, kernel: str, out: Path, overrides: list[str]) -> dict:
    run_dir, cache = out / f"{kernel}-seed{seed}", out / f"cache-{kernel}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "CITRUS_CACHE": str(cache), "WANDB_MODE": "offline"}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if kernel != "default":
        env["ATEN_CPU_CAPABILITY"] = kernel
    command = [
        sys.executable, "-m", "citrus.cli", "pipeline", "experiment=quickstart", f"seed={seed}",
        "logger=none", f"hydra.run.dir={run_dir}", *overrides,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{kernel} seed {seed} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    shutil.rmtree(cache, ignore_errors=True)
    run = {"seed": seed, "kernel": kernel, "seconds": round(seconds, 1), "overrides": overrides}
    run["commit"] = commit()
    run |= {"base": metrics["base/mean_accuracy"], "sft": metrics["sft/mean_accuracy"]}
    log = run_dir / "preference" / "train_log.jsonl"
    if log.is_file():  # (a study of the SFT stage alone has none)
        held_out = [row for row in map(json.loads, log.read_text().splitlines()) if MARGIN in row]
        run |= {
            "preference": metrics["preference/mean_accuracy"],
            "margin_first": held_out[0][MARGIN],
            "margin_last": held_out[-1][MARGIN],
            "ranked_first": held_out[0][RANKED],
            "ranked_last": held_out[-1][RANKED],
        }
    return run


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def summary(runs: list[dict]) -> str:
    """Markdown: one row per run, then mean ± sd per kernel set and over all runs."""
    head = (
        "| kernels | seed | before | after SFT | after CPO-SimPO | held-out margin | "
        "held-out ranked right | minutes |\n|---|---|---|---|---|---|---|---|"
    )
    absent = dict.fromkeys(("preference", "margin_first", "margin_last", "ranked_first"), NAN)
    runs = [{**absent, "ranked_last": NAN, **r} for r in runs]
    rows = [
        f"| {r['kernel']} | {r['seed']} | {r['base']:.3f} | {r['sft']:.3f} | "
        f"{r['preference']:.3f} | {r['margin_first']:.3f} -> {r['margin_last']:.3f} | "
        f"{r['ranked_first']:.3f} -> {r['ranked_last']:.3f} | {r['seconds'] / 60:.1f} |"
        for r in runs
    ]
    groups = {
        k: [r for r in runs if r["kernel"] == k] for k in dict.fromkeys(r["kernel"] for r in runs)
    }
    if len(groups) > 1:
        groups["all"] = runs
    for name, group in groups.items():
        gain = [r["margin_last"] - r["margin_first"] for r in group]
        rows.append(
            f"| **{name}** (n={len(group)}) | | {spread([r['base'] for r in group])} | "
            f"{spread([r['sft'] for r in group])} | {spread([r['preference'] for r in group])} | "
            f"+{spread(gain)} | | {spread([r['seconds'] / 60 for r in group])} |"
        )
    return "\n".join([head, *rows])


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "citrus", "conf", "experiments"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return done.stdout.strip() + ("+changes" if dirty else "")


def write_section(doc: Path, body: str) -> None:
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: no {BEGIN} ... {END} markers to write between")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    doc.write_text(text[:start] + "\n" + body + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--kernels", nargs="+", default=["avx2", "avx512"])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "quickstart_study")
    parser.add_argument("--write", type=Path, help="a docs page with the study's markers")
    parser.add_argument("--no-run", action="store_true", help="summarize the finished runs only")
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.jsonl"
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    for kernel in [] if args.no_run else args.kernels:
        for seed in args.seeds:
            key = (seed, kernel, overrides, commit())
            if any((r["seed"], r["kernel"], r["overrides"], r.get("commit")) == key for r in runs):
                continue
            run = one_run(seed, kernel, args.out, overrides)
            print(json.dumps(run), flush=True)
            with log.open("a") as f:
                f.write(json.dumps(run) + "\n")
            runs.append(run)
    picked = [r for r in runs if r["seed"] in args.seeds and r["kernel"] in args.kernels
              and r["overrides"] == overrides and r.get("commit") == commit()]  # fmt: skip
    picked.sort(key=lambda r: (args.kernels.index(r["kernel"]), r["seed"]))
    table = summary(picked)
    print(table)
    if args.write:
        cpu = platform.processor() or platform.machine()
        command = "python benchmarks/quickstart_study.py " + " ".join(
            [f"--seeds {' '.join(map(str, args.seeds))}", f"--kernels {' '.join(args.kernels)}"]
            + (["--", *overrides] if overrides else [])
        )
        header = (
            f"{date.today()}, commit {commit()}, {os.cpu_count()} cores ({cpu}), "
            f"`{command}`, each run on a fresh cache:\n"
        )
        write_section(args.write, header + "\n" + table)


if __name__ == "__main__":
    main()
