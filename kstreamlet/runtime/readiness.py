"""Readiness (``/readyz``) of a member, answered from the HTTP server's threads.

Ready = joined the group (``on_assign`` ran for the current consumer, or the group
coordinator lists it without partitions: KIP-848 never calls ``on_assign`` for an empty
assignment), no task restoring, clients not being rebuilt, and a broker reachable (after
librdkafka reported every broker down, until a metadata request succeeds again). The probes
never call the consumer: its methods block while the loop thread is inside ``consume()``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import structlog
from confluent_kafka.admin import AdminClient

log = structlog.get_logger("kstreamlet.member")


class Readiness:
    """What ``/readyz`` needs to know, kept by the member's callbacks and asked by probes."""

    def __init__(self, admin: Callable[[], AdminClient], group_id: str, client_id: str) -> None:
        self._admin = admin
        self.group_id = group_id
        self.client_id = client_id
        #: The consumer whose group membership is established; a rebuilt consumer rejoins.
        self.joined_for: Any = None
        #: When librdkafka last said every broker is down (0: reachable).
        self.unreachable_since = 0.0
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._join_probe_at = 0.0
        self._reach_probe_at = 0.0

    def joined(self, consumer: Any) -> None:
        self.joined_for = consumer

    def all_brokers_down(self) -> None:
        self.unreachable_since = time.monotonic()

    def check(self, consumer: Any, restoring: bool, degraded: bool) -> bool:
        if degraded:
            return False
        if self.unreachable_since and not self._probe_reachable():
            return False
        if consumer is None or restoring:
            return False
        return self.joined_for is consumer or self._probe_joined(consumer)

    def _probe_reachable(self) -> bool:
        """False until a metadata request succeeds again (at most one per second, 1 s each), so a
        member that has nothing in flight (and so no transactional call to time out) is not
        ready either while the cluster is gone."""
        since = self.unreachable_since
        if not self._lock.acquire(timeout=0.5):
            return False
        try:
            now = time.monotonic()
            if now < self._reach_probe_at:
                return False
            self._reach_probe_at = now + 1.0
            self._admin().list_topics(timeout=1)
            if self.unreachable_since == since:
                self.unreachable_since = 0.0
            return True
        except Exception:
            return False
        finally:
            self._lock.release()

    def _probe_joined(self, consumer: Any) -> bool:
        """Does the group coordinator list this member (by client.id: instance ids are unique in
        a group), with no partitions, in a stable group? At most one DescribeConsumerGroups per
        second, none once joined."""
        if not self._lock.acquire(timeout=0.5):
            return False
        try:
            now = time.monotonic()
            if self.joined_for is consumer or now < self._join_probe_at:
                return self.joined_for is consumer
            self._join_probe_at = now + 1.0
            admin = self._admin()
            gid = self.group_id
            desc = admin.describe_consumer_groups([gid], request_timeout=2)[gid].result(timeout=2)
            admin.poll(0)  # serve its log lines
            mine = [m for m in desc.members if m.client_id == self.client_id]
            stable = getattr(desc.state, "name", str(desc.state)) == "STABLE"
            if not mine or not stable or any(m.assignment is not None and m.assignment.topic_partitions for m in mine):
                return False  # not (yet) a member, or partitions are coming: on_assign will tell
            self.joined_for = consumer
            self.ready.set()
            log.info("joined the group without partitions; ready")
            return True
        except Exception as e:  # a probe never raises: not ready (yet), ask again next time
            log.debug("group membership probe failed", error=str(e))
            return False
        finally:
            self._lock.release()
