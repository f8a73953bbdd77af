"""One error hierarchy for every lab; each kind maps to one CLI exit code."""

from __future__ import annotations


class TrustlabError(Exception):
    """An error a user can act on: ``message`` says what was wrong, ``hint`` how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class ConfigError(TrustlabError, ValueError):
    """A bad option, flag or config value (exit 2)."""

    exit_code = 2


class DataError(TrustlabError, ValueError):
    """A bad dataset or file: wrong column, corrupt, empty, out of range (exit 2)."""

    exit_code = 2


class ModelError(TrustlabError, ValueError):
    """A model that cannot be loaded or behaves out of contract (exit 2)."""

    exit_code = 2


class MissingDependencyError(TrustlabError, ImportError):
    """An optional package or dataset is not installed; the hint names the install command (exit 3)."""

    exit_code = 3


class BackendError(TrustlabError, RuntimeError):
    """A remote peer (party, server, endpoint) died, timed out or sent a malformed reply (exit 4)."""

    exit_code = 4


class Interrupted(TrustlabError):
    """The user interrupted a run; the hint names the resume command (exit 130)."""

    exit_code = 130


def require(module: str, install: str):
    """Import ``module`` or raise MissingDependencyError naming ``install`` (a pip/apt command)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"optional dependency {module!r} is not importable: {exc}", hint=install) from exc
