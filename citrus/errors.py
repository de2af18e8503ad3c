"""The errors a user can fix: a bad config, bad data, a server that fails, a full disk.

The `citrus` command prints such an error's message alone (what, where, how to fix) and exits 1;
a traceback only with CITRUS_DEBUG=1 or HYDRA_FULL_ERROR=1. Anything else is a bug in citrus
and keeps its traceback. Each class also subclasses the builtin a caller would expect, so
`except ValueError` still catches a bad record.
"""

from __future__ import annotations


class CitrusError(Exception):
    """An error in what the user gave citrus, with a message that says what to change."""


class ConfigError(CitrusError, ValueError):
    """A setting that cannot work; the message names the key."""


class DataError(CitrusError, ValueError):
    """Bad input data; the message names the file, line or record at fault."""


class EngineError(CitrusError, RuntimeError):
    """A generation request that failed for good, from any engine (a 4xx, retries exhausted, a
    backend that raised). Data jobs mark the items it hit as failed and go on."""


class StorageError(CitrusError, OSError):
    """A run directory or cache that cannot take the job's output: found before any work."""


class MissingFileError(CitrusError, FileNotFoundError):
    """A file or directory the config names that is not there (a model, a prompt, a checkpoint)."""
