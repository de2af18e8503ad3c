"""One process of a two-process FSDP2 load, started by torchrun from test_scale.py: load the
model of a resolved config as `citrus train` does (`sharded`) or as every rank used to, with a
whole from_pretrained copy (`whole`), and print this process's host-memory growth in MB."""

from __future__ import annotations

import json
import resource
import sys

import lightning as L
from omegaconf import OmegaConf


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def main(config: str, how: str) -> None:
    from citrus.config import Config
    from citrus.models import load_model
    from citrus.train.modules import build_policy
    from citrus.train.strategy import build_strategy

    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(config))
    fabric = L.Fabric(accelerator="cpu", strategy=build_strategy(cfg.trainer), devices=2)
    fabric.launch()
    before = peak_mb()
    model = build_policy(cfg)[1] if how == "sharded" else load_model(cfg.model, "float32")
    fabric.setup_module(model)
    print(json.dumps({"rank": fabric.global_rank, "growth_mb": peak_mb() - before}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
