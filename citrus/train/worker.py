"""Entry point of local ranks 1..n-1 of a multi-process run that citrus started itself
(citrus/train/launch.py): `python -m citrus.train.worker <resolved config> <run dir>`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from omegaconf import OmegaConf


def main(config_path: str, out_dir: str) -> None:
    """Train on the resolved config; rank 0 keeps the run record and the tracker."""
    from citrus.config import Config
    from citrus.tracking import NullTracker
    from citrus.train.trainer import train

    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(config_path))
    rank = os.environ.get("LOCAL_RANK")
    logging.basicConfig(
        level=logging.WARNING, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s"
    )
    record = SimpleNamespace(path=None, add_input=lambda path, role: "")
    run = SimpleNamespace(dir=Path(out_dir), record=record, tracker=NullTracker())
    train(cfg, Path(out_dir), run)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
