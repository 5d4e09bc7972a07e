"""The benchmarks' probes on a kstreamlet member, through its listener API
(``kstreamlet.runtime.listener.RuntimeListener``: one call per batch and per commit, nothing
per record).

``--kstreamlet-ref`` may measure a revision from before the listener API: :func:`member`
then drives the same hooks from a subclass of that revision's ``Member`` (its private
``_process`` / ``_commit`` / ``_on_assign`` / ``_restore_step``), so both sides of a
comparison pay for the same probe calls.
"""

from __future__ import annotations

import inspect
from typing import Any


class Hooks:
    """Override what a scenario needs; every hook runs on the member's loop thread."""

    def before_batch(self, member: Any, records: list[Any]) -> None:
        pass

    def on_batch(self, member: Any, records: list[Any], processed: int) -> None:
        pass

    def on_commit(self, member: Any, seconds: float) -> None:
        pass

    def on_assigned(self, member: Any, partitions: list[Any], restoring: list[str]) -> None:
        pass

    def on_task_restored(self, member: Any, task_id: str) -> None:
        pass


def member(app: Any, hooks: Hooks, instance_id: str = "bench-0", install_signal_handlers: bool = False) -> Any:
    """A kstreamlet ``Member`` of ``app`` reporting to ``hooks``."""
    from kstreamlet.runtime.member import Member

    if "listeners" in inspect.signature(Member.__init__).parameters:
        return Member(app, instance_id, install_signal_handlers, listeners=[hooks])

    class LegacyMember(Member):  # type: ignore[misc, valid-type]
        """A revision without listeners: the same hook calls from its private methods."""

        def _process(self, msgs: list[Any]) -> None:
            hooks.before_batch(self, msgs)
            before = self.records_processed
            Member._process(self, msgs)
            hooks.on_batch(self, msgs, self.records_processed - before)

        def _commit(self) -> None:
            dirty = self.ckpt is not None and self.ckpt.dirty
            Member._commit(self)
            if dirty:
                hooks.on_commit(self, self.ckpt.last_commit_seconds if self.ckpt is not None else 0.0)

        def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
            Member._on_assign(self, consumer, partitions)
            if partitions:
                active = self.restorer.active if self.restorer is not None else {}
                hooks.on_assigned(self, partitions, sorted({str(r.task_key) for r in active.values()}))

        def _restore_step(self) -> None:
            was = bool(self.restorer is not None and self.restorer.active)
            Member._restore_step(self)
            if was and not (self.restorer is not None and self.restorer.active):
                hooks.on_task_restored(self, "")

    return LegacyMember(app, instance_id, install_signal_handlers)
