"""Rolling policies of :class:`~kstreamlet.sinks.files.FileSink`: when an in-progress part file is
closed and made pending (it is finished when the checkpoint that contains it commits)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

class PartFileInfo(Protocol):
    """State of an in-progress part file, for rolling decisions (task-clock milliseconds)."""

    bucket: str
    size: int
    created_ms: int
    updated_ms: int


class RollingPolicy(ABC):
    """Decides when an in-progress part file is rolled (closed and made pending)."""

    @abstractmethod
    def should_roll_on_event(self, part: PartFileInfo) -> bool:
        """After a record was written to ``part``."""

    @abstractmethod
    def should_roll_on_processing_time(self, part: PartFileInfo, now_ms: int) -> bool:
        """On processing-time checks (timer, checkpoints, writes)."""

    @abstractmethod
    def should_roll_on_checkpoint(self, part: PartFileInfo) -> bool:
        """At a checkpoint's pre-commit."""

    def check_interval(self) -> float | None:
        """Seconds between processing-time checks, or None if time never matters."""
        return None


class DefaultRollingPolicy(RollingPolicy):
    """Roll when the file reaches ``max_part_size`` bytes, has been open ``rollover_interval``
    seconds, or got no record for ``inactivity_interval`` seconds (Flink's defaults: 128 MiB,
    60 s, 60 s)."""

    def __init__(self, max_part_size: int = 128 * 1024 * 1024, rollover_interval: float = 60.0,
                 inactivity_interval: float = 60.0) -> None:
        if max_part_size < 1 or rollover_interval <= 0 or inactivity_interval <= 0:
            raise ValueError("max_part_size, rollover_interval and inactivity_interval must be > 0")
        self.max_part_size = max_part_size
        self.rollover_interval = rollover_interval
        self.inactivity_interval = inactivity_interval
        self._rollover_ms = int(rollover_interval * 1000)
        self._inactivity_ms = int(inactivity_interval * 1000)

    def should_roll_on_event(self, part: PartFileInfo) -> bool:
        return part.size >= self.max_part_size

    def should_roll_on_processing_time(self, part: PartFileInfo, now_ms: int) -> bool:
        return now_ms - part.created_ms >= self._rollover_ms or now_ms - part.updated_ms >= self._inactivity_ms

    def should_roll_on_checkpoint(self, part: PartFileInfo) -> bool:
        return part.size >= self.max_part_size

    def check_interval(self) -> float | None:
        return min(60.0, self.rollover_interval, self.inactivity_interval)

    def __repr__(self) -> str:
        return (f"DefaultRollingPolicy(max_part_size={self.max_part_size}, rollover_interval={self.rollover_interval}, "
                f"inactivity_interval={self.inactivity_interval})")


class OnCheckpointRollingPolicy(RollingPolicy):
    """Roll every in-progress file at every checkpoint (the only policy of bulk formats in Flink)."""

    def should_roll_on_event(self, part: PartFileInfo) -> bool:
        return False

    def should_roll_on_processing_time(self, part: PartFileInfo, now_ms: int) -> bool:
        return False

    def should_roll_on_checkpoint(self, part: PartFileInfo) -> bool:
        return True


__all__ = ["PartFileInfo", "RollingPolicy", "DefaultRollingPolicy", "OnCheckpointRollingPolicy"]
