"""The end-offset read every whole-topic reader uses (restore, broadcast, topology check, tools):
a topic just created (its metadata not on every broker yet) or a partition whose leader moves
is retried within a bound; any other error is raised at once."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from kstreamlet.runtime.broadcasts import end_offsets
from kstreamlet.runtime.topics import end_offset


class FlakyConsumer:
    def __init__(self, failures: list[int], high: int = 42) -> None:
        self.failures = list(failures)
        self.high = high
        self.calls = 0

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        self.calls += 1
        assert not cached
        if self.failures:
            raise KafkaException(KafkaError(self.failures.pop(0), "injected"))
        return 0, self.high


def test_unknown_partition_of_a_new_topic_is_retried_until_it_answers() -> None:
    c = FlakyConsumer([KafkaError._UNKNOWN_PARTITION, KafkaError.LEADER_NOT_AVAILABLE])
    assert end_offset(c, "t", 0) == 42  # type: ignore[arg-type]
    assert c.calls == 3


def test_whole_topic_readers_retry_too() -> None:
    c = FlakyConsumer([KafkaError._UNKNOWN_PARTITION])
    assert end_offsets(c, [("t", 0), ("t", 1)]) == {("t", 0): 42, ("t", 1): 42}  # type: ignore[arg-type]


def test_other_errors_are_raised_at_once() -> None:
    c = FlakyConsumer([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        end_offset(c, "t", 0)  # type: ignore[arg-type]
    assert c.calls == 1


def test_a_partition_that_never_answers_fails_within_the_bound() -> None:
    c = FlakyConsumer([KafkaError._UNKNOWN_PARTITION] * 1000)
    t0 = time.monotonic()
    with pytest.raises(KafkaException):
        end_offset(c, "t", 0, within=0.5)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 2
