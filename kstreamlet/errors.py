"""Public exception types."""

from __future__ import annotations


class KStreamletError(Exception):
    """Base class of kstreamlet's errors."""


class ConfigError(KStreamletError, ValueError):
    """Invalid configuration; the message names the field."""


class TopologyError(KStreamletError):
    """The topology cannot run (e.g. co-partitioned inputs with different partition counts)."""


class ProcessingError(KStreamletError):
    """A record failed and the error policy is ``fail``."""

    def __init__(self, message: str, topic: str, partition: int, offset: int):
        super().__init__(f"{message} (at {topic}[{partition}]@{offset})")
        self.topic, self.partition, self.offset = topic, partition, offset
