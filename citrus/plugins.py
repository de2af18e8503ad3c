"""One way to name a component: a registry key for citrus's own, an import path for yours.

`algorithm.loss=cpo_simpo` picks citrus's objective; `algorithm.loss=my_lab.losses:hinge` imports
`hinge` from your module (torchtune's `_component_` idea). The same holds for rewards
(`reward.weights`), benchmark loaders (`benchmark.tasks.<t>.loader`), answer readers
(`benchmark.extractor`, `reward.extractor`) and loggers (`logger.name`). Your component satisfies
the registry's Protocol and reads its own settings from the `params` node beside the name
(`algorithm.params`, `reward.params`, a task's `params`); nothing in citrus is edited.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TypeVar

from citrus.errors import ConfigError

T = TypeVar("T")


def is_import_path(name: str) -> bool:
    return ":" in name


def lookup(registry: Mapping[str, T], name: str, key: str) -> T:
    """`registry[name]`, or the object `module:attribute` names; a clear error naming `key`."""
    if not is_import_path(name):
        if name not in registry:
            raise ConfigError(
                f"{key}={name!r}: one of {sorted(registry)}, or an import path module:attribute"
            )
        return registry[name]
    module, _, attribute = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except ImportError as e:
        raise ConfigError(f"{key}={name!r}: cannot import {module} ({e})") from None
    except AttributeError:
        raise ConfigError(f"{key}={name!r}: {module} has no {attribute!r}") from None
