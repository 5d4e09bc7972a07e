"""Hooks into a running member, for measurements and embedding (the benchmarks use them
instead of subclassing the member). Every method is a no-op; override what you need.

They run on the member's loop thread, inside the loop: keep them short, and never raise.
"""

from __future__ import annotations

from typing import Any

#: The member calling (runtime/member.py ``Member``; not imported here: the member imports this).
Member = Any


class RuntimeListener:
    """Called by :class:`~kstreamlet.runtime.member.Member` as it runs."""

    def before_batch(self, member: Member, records: list[Any]) -> None:
        """A non-empty batch was polled and is about to be processed."""

    def on_batch(self, member: Member, records: list[Any], processed: int) -> None:
        """A batch was processed (``processed``: data records routed to tasks)."""

    def on_commit(self, member: Member, seconds: float) -> None:
        """A checkpoint committed (it took ``seconds``)."""

    def on_assigned(self, member: Member, partitions: list[Any], restoring: list[str]) -> None:
        """Partitions were assigned; ``restoring``: ids of the new tasks restoring their state."""

    def on_task_restored(self, member: Member, task_id: str) -> None:
        """A task's stores are restored; it processes from now on."""
