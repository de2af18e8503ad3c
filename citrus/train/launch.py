"""Start the other local processes of a multi-process run (trainer.devices > 1) the way torchrun
would, without re-running Hydra: this process is local rank 0; ranks 1..n-1 run
`python -m citrus.train.worker <config>` on the resolved config written into the run directory.
So a multi-process job makes one run directory, and a multirun sweep stays one sweep.

Under torchrun or SLURM (srun) every process already exists and nothing is started here:
Fabric reads the cluster environment (multi-node goes through those launchers).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from citrus.errors import ConfigError

log = logging.getLogger(__name__)


def started_externally() -> bool:
    """torchrun, srun, or a launcher that set LOCAL_RANK already made every process."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return (
        "LOCAL_RANK" in os.environ or TorchElasticEnvironment.detect() or SLURMEnvironment.detect()
    )


def global_rank() -> int:
    """This process's rank among those srun or torchrun started for the job; 0 otherwise."""
    if not started_externally():
        return 0
    return int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Workers:
    """Local ranks 1..n-1 as child processes, watched: if one fails, the others and this
    process are stopped instead of waiting forever in a collective."""

    def __init__(self, cfg: Any, out_dir: Path):
        n = cfg.trainer.devices
        if cfg.trainer.num_nodes > 1:
            raise ConfigError(
                "trainer.num_nodes > 1: start one process per device with torchrun or srun "
                "(see hydra/launcher=submitit_slurm); citrus only starts processes on one node"
            )
        launch_dir = out_dir / ".citrus"
        launch_dir.mkdir(parents=True, exist_ok=True)
        config = launch_dir / "launch.yaml"
        config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
            "WORLD_SIZE": str(n),
            "NODE_RANK": "0",
        }
        os.environ.update(
            {k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK")},
            LOCAL_RANK="0",
        )
        self.logs = [launch_dir / f"rank{r}.log" for r in range(1, n)]
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "citrus.train.worker", str(config), str(out_dir)],
                env={**env, "LOCAL_RANK": str(r)},
                stdout=f.open("w"),
                stderr=subprocess.STDOUT,
            )
            for r, f in zip(range(1, n), self.logs)
        ]
        log.info("started %d worker process(es); their logs: %s", len(self.procs), launch_dir)
        self.done = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while not self.done.is_set():
            for proc, path in zip(self.procs, self.logs):
                if proc.poll() not in (None, 0):
                    log.error(
                        "worker %s exited with %s; stopping the run (see %s)",
                        proc.args[-1],
                        proc.returncode,
                        path,
                    )
                    self.stop()
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
            time.sleep(1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()

    def join(self) -> None:
        """Wait for the workers; the launch environment is undone whatever they return."""
        self.done.set()
        try:
            for proc, path in zip(self.procs, self.logs):
                if proc.wait() != 0:
                    raise RuntimeError(f"worker process exited with {proc.returncode}; see {path}")
        finally:
            self._forget_environment()

    def abort(self) -> None:
        """This process failed: stop the workers and undo the launch environment, so that a later
        job in this process (the next of a multirun) starts its own instead of waiting for them."""
        self.done.set()
        self.stop()
        for proc in self.procs:
            proc.wait()
        self._forget_environment()

    @staticmethod
    def _forget_environment() -> None:
        for key in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT"):
            os.environ.pop(key, None)


def start_workers(cfg: Any, out_dir: Path) -> Workers | None:
    """Ranks 1..n-1 of a multi-process run that nobody else started; the model and the training
    file every rank reads are built first, once."""
    if cfg.trainer.devices * cfg.trainer.num_nodes == 1 or started_externally():
        return None
    from citrus.data.prepare import training_file
    from citrus.models import resolve_path

    resolve_path(cfg.model)
    training_file(cfg.data, cfg.paths.data_dir)
    return Workers(cfg, out_dir)
