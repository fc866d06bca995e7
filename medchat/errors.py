"""Errors a user can cause or fix. The CLI prints their message as one line and exits with ``exit_code``.

Anything that is *not* a MedchatError is a bug and keeps its traceback.
"""

from __future__ import annotations


class MedchatError(Exception):
    """Base class: ``str(err)`` is the one line shown to the user."""

    exit_code = 1


class UsageError(MedchatError):
    """A flag or argument value that cannot work."""

    exit_code = 2


class ConfigError(MedchatError):
    """The config file or a MEDCHAT_* variable is malformed."""

    exit_code = 2


class ModelUnavailable(MedchatError):
    """The model is neither cached nor downloadable (offline, unknown id, no permission)."""

    exit_code = 3


class AdapterError(MedchatError):
    """An adapter is missing, incomplete, or was made for another base model."""

    exit_code = 4


class DataError(MedchatError):
    """A training data file or row is unusable."""

    exit_code = 5


class HardwareError(MedchatError):
    """Out of memory, or the requested device/backend is not present."""

    exit_code = 6


class BackendError(MedchatError):
    """The generation backend failed (including remote endpoints)."""

    exit_code = 7


class Interrupted(MedchatError):
    """The user pressed Ctrl+C; whatever could be saved has been saved."""

    exit_code = 130


def out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/CPU allocation failures, without importing torch when it is not loaded."""
    name = type(exc).__name__
    return name in {"OutOfMemoryError", "MemoryError"} or "out of memory" in str(exc).lower()
