"""The one error hierarchy of dowguard; every package raises these."""

from __future__ import annotations


class DowError(Exception):
    """Base of every error dowguard raises on purpose."""


class ConfigError(DowError):
    """A setting is missing, malformed or contradicts another."""


class StorageError(DowError):
    """The database refused or lost a write or a read."""


class EnforcementError(DowError):
    """A hook could not throttle, release or read a function."""


class BrokerError(DowError):
    """Kafka could not be reached, or refused a request."""


class ParseError(DowError):
    """Input that no parser accepts.

    The message names where the input came from (``source``: a file path, a
    Kafka topic/partition/offset), where in it the problem is (``position``:
    a byte offset, a line, a record index or a field path) and what was wrong.
    """

    def __init__(self, source: str, position: str, reason: str) -> None:
        self.source = source
        self.position = position
        self.reason = reason
        super().__init__(f"{source} at {position}: {reason}")
