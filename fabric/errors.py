"""The one error hierarchy of fabric: every error class fabric raises on purpose is here.

Every error a user can cause derives from :class:`FabricError`; adapters (CLI, API) translate
it at the edge: the CLI prints the message and exits 1, the API answers one JSON shape whose
``code`` is the raising class's :attr:`FabricError.code` (inherited by its subclasses, so a
family of conditions answers as one, as the README's table documents). Each code is declared
by exactly one class. Messages say what went wrong, where (file and path inside it, source and
table, entity type and id) and how to fix it. They never carry secret values or unmasked source
data.
"""

from __future__ import annotations

__all__ = [
    "BadTimeError",
    "BudgetExceededError",
    "ConfigError",
    "EntityNotFoundError",
    "ExecutorError",
    "ExpiredError",
    "FabricError",
    "InvalidRequestError",
    "JobNotReadyError",
    "ObjectStorageError",
    "PayloadTooLargeError",
    "QuotaExceededError",
    "ReadTimeoutError",
    "ReloadError",
    "RevealError",
    "RuleError",
    "SourceError",
    "SourceUnavailableError",
    "SpineError",
    "SpineTooLargeError",
    "StaleWriteError",
    "StoreError",
    "StoreUnavailableError",
    "TokenError",
]


class FabricError(Exception):
    """Base of every error fabric raises on purpose."""

    #: Stable machine-readable code, used by the API's JSON error shape.
    code = "fabric_error"


# -- configuration, rules, sources and the store ------------------------------------------


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


class StoreUnavailableError(StoreError):
    """The store's server (the postgres backend) cannot be reached or went away (503 over
    the API): the message names host, port and database, never a password. The next
    request connects again."""

    code = "store_unavailable"


class StaleWriteError(StoreError):
    """A write expected a version that is no longer the stored one."""

    code = "stale_write"


class TokenError(FabricError):
    """A token that is not one of ours, or that this key cannot open."""

    code = "bad_token"


# -- what a caller asked for ---------------------------------------------------------------


class EntityNotFoundError(FabricError):
    """No entity answers to the given id or source key (or no view, job or file to a name)."""

    code = "not_found"


class ExpiredError(EntityNotFoundError):
    """An export's file or an uploaded spine was deleted after ``api.exports.keep_hours``."""


class InvalidRequestError(FabricError):
    """A request parameter is malformed (an id with NUL bytes, an unknown table name)."""

    code = "bad_request"


class BadTimeError(InvalidRequestError):
    """A time that is not ISO 8601."""


class SpineError(InvalidRequestError):
    """A spine that cannot be used: a missing column, a time that does not parse."""


class ReloadError(InvalidRequestError):
    """A new configuration was refused; the old one keeps serving."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        # One line (error bodies keep the first line): every problem, separated.
        super().__init__(
            "the new configuration was refused and the old one keeps serving: "
            + " | ".join(problems)
        )


class PayloadTooLargeError(FabricError):
    """Something a caller sent or asked for is past a configured size."""

    code = "payload_too_large"


class SpineTooLargeError(PayloadTooLargeError, SpineError):
    """A spine past a limit of :class:`fabric.features.spine.SpineLimits` (413 over the API);
    a :class:`SpineError` too, for those who catch any unusable spine."""


class QuotaExceededError(PayloadTooLargeError):
    """A key would hold more than ``api.exports.max_bytes_per_key`` (413)."""


class BudgetExceededError(PayloadTooLargeError):
    """An export's file passed the bytes it was given (``budget`` of
    :func:`fabric.services.export.export_view`); the export stopped, and nothing of it was
    kept."""

    def __init__(self, name: str, written: int, budget: int) -> None:
        super().__init__(
            f"{name}: the export passed its budget of {budget:,} bytes ({written:,} "
            "written); it was stopped and nothing of it was kept"
        )
        self.written = written
        self.budget = budget


class ObjectStorageError(FabricError):
    """S3-compatible storage refused a request or did not answer (503 over the API): the
    message names the object and the storage's reason, never a credential."""

    code = "storage_error"


class RevealError(FabricError):
    """The value cannot be revealed: the role may not, or it is not one fabric made."""

    code = "forbidden"


class JobNotReadyError(FabricError):
    """The job's file is asked for before the job succeeded."""

    code = "conflict"


class ExecutorError(FabricError):
    """Where a run's tasks execute failed: a scheduler unreachable or gone, a worker died."""

    code = "executor_error"


class ReadTimeoutError(FabricError):
    """A read ran past its time limit (``api.read_timeout_ms``) and was stopped."""

    code = "timeout"
