"""The context handed to ``process(fn)`` functions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from kstreamlet.runtime.task import Task


class ProcessorContext:
    """What a ``process`` function sees of the record being processed and how it emits.

    ``key`` and ``timestamp`` (ms) are the current record's; ``topic``, ``partition``,
    ``offset`` and ``headers`` describe the input record it came from. ``emit`` forwards a
    value downstream (keeping key and timestamp unless given); ``side_output(tag, value)``
    sends to the stream obtained with ``.side_output(tag)``.

    Example::

        def split_words(line, ctx):
            for w in line.split():
                ctx.emit(w, key=w)
            if not line:
                ctx.side_output("empty", ctx.offset)
    """

    __slots__ = ("key", "timestamp", "_task", "_forward", "_sides", "broadcast_state")

    def __init__(self, task: "Task", forward: Callable[[Any, Any, int], None], sides: dict[str, Callable[[Any, Any, int], None]]):
        self.key: Any = None
        self.timestamp: int = 0
        self._task = task
        self._forward = forward
        self._sides = sides
        #: In a connected broadcast stream: the read-only broadcast state (else None).
        self.broadcast_state: Any = None

    def emit(self, value: Any, key: Any = ..., timestamp: int | None = None) -> None:
        """Forward ``value`` to the next operators."""
        self._forward(self.key if key is ... else key, value, self.timestamp if timestamp is None else timestamp)

    def side_output(self, tag: str, value: Any, key: Any = ...) -> None:
        """Send ``value`` to the side output named ``tag`` (dropped if nobody reads that tag)."""
        out = self._sides.get(tag)
        if out is not None:
            out(self.key if key is ... else key, value, self.timestamp)

    @property
    def topic(self) -> str:
        return self._task.msg.topic()  # type: ignore[no-any-return]

    @property
    def partition(self) -> int:
        return self._task.msg.partition()  # type: ignore[no-any-return]

    @property
    def offset(self) -> int:
        return self._task.msg.offset()  # type: ignore[no-any-return]

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return self._task.msg.headers() or []

    @property
    def task_id(self) -> str:
        return self._task.id
