"""One error root for the whole server.

Like aiokafka's ``KafkaError``, every error carries a ``retriable`` flag: the
engine retries retriable errors with backoff, and stops loudly on the rest.
"""

from __future__ import annotations


class ProjectorError(Exception):
    """Root of every error this project raises on purpose."""

    retriable: bool = False


class ConfigError(ProjectorError):
    """A setting is missing or malformed; the message names the variable."""


class TransientError(ProjectorError):
    """A dependency (PostgreSQL, the broker) failed in a way that may pass."""

    retriable = True


class FencedError(TransientError):
    """Another instance moved a checkpoint we expected to own: re-seek and go on."""


class LogTruncatedError(ProjectorError):
    """A checkpoint lies outside the partition's log (retention or topic recreated)."""


class EmbeddedServerError(ProjectorError):
    """An embedded server (PostgreSQL or the broker) failed to start or died."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message + (f"\n--- last lines of its log ---\n{log_tail}" if log_tail else ""))
        self.log_tail = log_tail


class InternalError(ProjectorError):
    """An invariant was violated: a bug. The message names the state."""
