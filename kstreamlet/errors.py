"""Public exception types."""

from __future__ import annotations


class KStreamletError(Exception):
    """Base class of kstreamlet's errors."""


class ConfigError(KStreamletError, ValueError):
    """Invalid configuration; the message names the field."""


class TopologyError(KStreamletError):
    """The topology cannot run (e.g. co-partitioned inputs with different partition counts)."""


class ProcessingError(KStreamletError):
    """A record (or a timer: ``topic`` None, ``where`` says which) failed and the error policy is ``fail``."""

    def __init__(self, message: str, topic: str | None = None, partition: int | None = None,
                 offset: int | None = None, where: str | None = None):
        loc = f"{topic}[{partition}]@{offset}" if topic is not None else where
        super().__init__(f"{message} (at {loc})" if loc else message)
        self.topic, self.partition, self.offset = topic, partition, offset


class RecordProductionError(KStreamletError):
    """The broker would reject one output record (too large, invalid timestamp, no such
    partition): a problem of that record, handled by the error policy like a failing record."""

    def __init__(self, topic: str, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.topic, self.code, self.detail = topic, code, message


class InspectionError(KStreamletError):
    """A store could not be found, read or decoded (kstreamlet/state/inspect.py); ``code`` is the
    exit code the CLI gives it (1: not found, 2: refused)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class AccessError(ConfigError):
    """The cluster refuses the app's credentials, certificate or an operation (a missing ACL): the
    message names the setting or the ACL (resource and operation). Fatal for the member; like every
    ConfigError, ``kstreamlet run`` prints it as one line and exits with code 2."""
