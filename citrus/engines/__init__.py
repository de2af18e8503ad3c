"""Text-generation backends behind one contract.

An engine is a class that keeps the `Engine` protocol below and raises `EngineError` (and
nothing else) for a request that fails for good; data jobs then mark the items it hit as failed
and go on. Its config, conf/engine/<name>.yaml, names the class (`class_path`) and sets its
settings; the class declares them as a dataclass (`Settings`, extending `EngineConfig`), against
which the YAML and every override are checked before a job starts. So adding an engine is one
module and one YAML:

    # citrus/engines/echo.py
    @dataclass
    class EchoSettings(EngineConfig):
        suffix: str = "!"

    class EchoEngine:
        Settings = EchoSettings
        def __init__(self, cfg, model_cfg): self.cfg, self.stats = cfg, {"requests": 0}
        def generate(self, conversations, on_batch=None, seeds=None): ...

    # conf/engine/echo.yaml: name: echo / class_path: citrus.engines.echo:EchoEngine / ...

Optional abilities are protocols of their own: `Streaming` (`citrus chat` streams a reply),
`Scoring` (likelihood evaluation: hf from its logits, vllm from prompt log-probabilities),
`Sampling` and `WeightSync` (GRPO rollouts as token ids, from a policy whose weights change
each step: hf samples from the policy itself, vllm loads its weights).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from citrus.config import EngineConfig
from citrus.errors import ConfigError, EngineError

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineError",
    "Sampling",
    "Scoring",
    "Streaming",
    "WeightSync",
    "build_engine",
]

Conversation = list[dict[str, str]]  # chat messages: {"role", "content"}
OnBatch = Callable[[list[int], list[Any]], None]  # (indices into the input, their outputs)


@runtime_checkable
class Engine(Protocol):
    cfg: Any  # its settings; read at every call (a role's engine is a copy with other settings)
    stats: dict[str, int]  # requests, prompt_tokens, completion_tokens: per-role usage and cost

    def generate(
        self,
        conversations: list[Conversation],
        on_batch: OnBatch | None = None,
        seeds: list[int] | None = None,
    ) -> list[str]:
        """One reply per conversation, in input order. `on_batch(indices, replies)` fires as
        replies arrive (jobs append them, so a killed job keeps them); `seeds`, one per
        conversation, where the backend takes per-request seeds."""
        ...


@runtime_checkable
class Streaming(Protocol):
    def stream(self, conversation: Conversation) -> Iterator[str]:
        """One reply, piece by piece as it is generated."""
        ...


@runtime_checkable
class Scoring(Protocol):
    def loglikelihoods(
        self, contexts: list[str], choices: list[list[str]], on_batch: OnBatch | None = None
    ) -> list[list[float]]:
        """log p(choice | context) for every choice of every context."""
        ...


@runtime_checkable
class Sampling(Protocol):
    def sample_ids(self, prompts: list[list[int]], n: int, seed: int) -> list[list[list[int]]]:
        """n completions per prompt as token ids (ending at a stop token, or cut at
        max_new_tokens), sampled with the engine's settings; the same seed, the same samples.
        What online RL trains on: the sampled tokens themselves, never re-tokenized text."""
        ...


@runtime_checkable
class WeightSync(Protocol):
    def load_weights(self, weights: Iterable[tuple[str, Any]]) -> None:
        """Replace the served model's weights (full tensors by parameter name): an RL policy's,
        before each step's sampling."""
        ...


def engine_class(engine_cfg: Any, where: str = "engine") -> type:
    """The class an engine config names in class_path (module:Class or module.Class)."""
    path = engine_cfg.get("class_path")
    if not path:
        raise ConfigError(
            f"{where}.class_path: name the engine's class, e.g. citrus.engines.hf:HFEngine"
        )
    module, _, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{where}.class_path={path}: cannot import it ({e})") from None


def typed(engine_cfg: Any, where: str = "engine", cls: type | None = None) -> Any:
    """The engine config checked against its class's Settings: a key the engine does not know,
    or a value of the wrong type, fails naming it."""
    settings = getattr(cls or engine_class(engine_cfg, where), "Settings", EngineConfig)
    try:
        # resolved first: its interpolations (${serve.port}, ${..model.name}) need the root
        values = OmegaConf.to_container(engine_cfg, resolve=True)
        return OmegaConf.merge(OmegaConf.structured(settings), values)
    except OmegaConfBaseException as e:
        key = f"{where}.{e.full_key}" if getattr(e, "full_key", None) else where
        message = str(getattr(e, "msg", e)).splitlines()[0]  # not OmegaConf's key/type dump
        raise ConfigError(f"{key}: {message} ({settings.__name__})") from None


def check_engines(cfg: Any) -> None:
    """Type-check the job's engine and every role's before the job starts."""
    if cfg.get("engine") is not None:
        typed(cfg.engine)
    for name, role in (cfg.get("roles") or {}).items():
        if role.engine is not None:
            typed(role.engine, f"roles.{name}.engine")


def build_engine(engine_cfg: Any, model_cfg: Any) -> Engine:
    cls = engine_class(engine_cfg)
    return cls(typed(engine_cfg, cls=cls), model_cfg)


def build_role_engine(role: Any, job_engine: Engine | None = None) -> Engine:
    """The engine an LLM role (conf/role/) speaks through, with the role's sampling settings.

    role.engine null: the job's already-loaded engine, shallow-copied with those settings, so a
    role played by the evaluated model costs no second copy of its weights."""
    settings = {
        "max_new_tokens": role.max_new_tokens,
        "temperature": role.temperature,
        "num_samples": 1,
    }
    if role.engine is None:
        if job_engine is None:
            raise ConfigError(
                f"role {role.name!r} uses the job's engine, but this job has none; "
                "pick a role with its own engine"
            )
        engine = copy.copy(job_engine)
        engine.cfg = OmegaConf.merge(job_engine.cfg, settings)
        engine.stats = dict.fromkeys(job_engine.stats, 0)  # tokens counted per role
        return engine
    if role.model is None:
        raise ConfigError(f"role {role.name!r}: an engine needs a model (roles.<role>.model)")
    return build_engine(OmegaConf.merge(role.engine, settings), role.model)
