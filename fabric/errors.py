"""The one error hierarchy of fabric.

Every error a user can cause derives from :class:`FabricError`; adapters (CLI, API) translate
it at the edge: the CLI prints the message and exits 1, the API answers one JSON shape. Messages
say what went wrong, where (file and path inside it, source and table, entity type and id) and
how to fix it. They never carry secret values or unmasked source data.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EntityNotFoundError",
    "FabricError",
    "RuleError",
    "SourceError",
    "SourceUnavailableError",
    "StoreError",
]


class FabricError(Exception):
    """Base of every error fabric raises on purpose."""

    #: Stable machine-readable code, used by the API's JSON error shape.
    code = "fabric_error"


class ConfigError(FabricError):
    """`fabric.yaml` (or a file it names) is missing, malformed or inconsistent."""

    code = "config_error"


class RuleError(FabricError):
    """A rule file (match, masking, features) is invalid."""

    code = "rule_error"


class SourceError(FabricError):
    """A source database or file cannot be read as the config declares it."""

    code = "source_error"


class SourceUnavailableError(SourceError):
    """A source cannot be reached at all (server down, file missing, driver not installed)."""

    code = "source_unavailable"


class StoreError(FabricError):
    """The entity store or catalog cannot be opened, read or written."""

    code = "store_error"


class EntityNotFoundError(FabricError):
    """No entity answers to the given id or source key."""

    code = "not_found"


class ReadTimeoutError(FabricError):
    """A read ran past its time limit (``api.read_timeout_ms``) and was stopped."""

    code = "timeout"
