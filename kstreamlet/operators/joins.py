"""Join operators: window joins and co-groups (a window function over both sides), interval joins, stream–table joins.

Both inputs arrive as one keyed stream of ``(side, value)`` (``LEFT`` or ``RIGHT``); the
builders in :mod:`kstreamlet.dsl.joins` make that union.
"""

from __future__ import annotations

import bisect
import heapq
import struct
from typing import Any, Callable

import structlog

from kstreamlet import metrics
from kstreamlet.api.context import KeyedContext, RuntimeContext
from kstreamlet.api.functions import KeyedProcessFunction
from kstreamlet.operators.window import WindowFunction
from kstreamlet.serdes import Serde
from kstreamlet.state.codec import BIAS, MAX_TIMESTAMP, MIN_TIMESTAMP, TIMESTAMP, decode_list, encode_list, key_prefix
from kstreamlet.state.keyed import ValueStateDescriptor
from kstreamlet.windowing.assigners import TimeWindow

_log = structlog.get_logger(__name__)

LEFT, RIGHT = 0, 1
_pack_ts = TIMESTAMP.pack
_unpack_ts = TIMESTAMP.unpack_from
_LEN = struct.Struct(">I")
_SIDES = (bytes((LEFT,)), bytes((RIGHT,)))


def key_prefix_length(entry: bytes) -> int:
    """Bytes of the :func:`~kstreamlet.state.codec.key_prefix` an entry starts with."""
    return 4 + int(_LEN.unpack_from(entry)[0])


#: First byte of co-group contents in the tagged layout (layout 1): ``0xff | encode_list([side(1) |
#: value, ...])`` in arrival order. Layout 0 (before issue 18) is ``encode_list([encode_list(lefts),
#: encode_list(rights)])``, whose first byte is that of a 4-byte length (0xff only for 4 GiB of lefts).
_TAGGED = b"\xff"
COGROUP_LAYOUT = 1


def _pair_codec(ls: Serde[Any], rs: Serde[Any]) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any],
                                                          Callable[[bytes, Any], bytes]]:
    lser, rser, lde, rde = ls.serialize, rs.serialize, ls.deserialize, rs.deserialize

    def ser(acc: list[list[Any]]) -> bytes:
        return _TAGGED + encode_list([b"\x00" + lser(v) for v in acc[0]] + [b"\x01" + rser(v) for v in acc[1]])

    def de(raw: bytes) -> list[list[Any]]:
        if raw[:1] != _TAGGED:  # layout 0 (written before issue 18)
            a, b = decode_list(raw)
            return [[lde(x) for x in decode_list(a)], [rde(x) for x in decode_list(b)]]
        lefts: list[Any] = []
        rights: list[Any] = []
        for item in decode_list(raw[1:]):
            if item[0] == LEFT:
                lefts.append(lde(item[1:]))
            else:
                rights.append(rde(item[1:]))
        return [lefts, rights]

    def append(raw: bytes, v: tuple[int, Any]) -> bytes:
        """One element more, without decoding the others (one write per element, not a rewrite of the
        window's contents)."""
        if raw[:1] != _TAGGED:
            raw = ser(de(raw))
        side, value = v
        item = (lser if side == LEFT else rser)(value)
        return raw + _LEN.pack(len(item) + 1) + _SIDES[side] + item

    return ser, de, append


CoGroupEmit = Callable[[Any, TimeWindow, list[Any], list[Any], Callable[[Any], None]], None]


def window_co_group_function(emit: CoGroupEmit, left_serde: Serde[Any], right_serde: Serde[Any]) -> WindowFunction:
    """A window's contents are ``[lefts, rights]`` (in arrival order); when it fires,
    ``emit(key, window, lefts, rights, out)`` once per key and window — a window exists once
    either side has an element in it, so one of the lists may be empty (Flink's ``CoGroupedStreams``)."""
    ser, de, append = _pair_codec(left_serde, right_serde)

    def fire(key: Any, w: TimeWindow, acc: list[list[Any]], out: Callable[[Any], None]) -> None:
        emit(key, w, acc[0], acc[1], out)

    def add(v: tuple[int, Any], acc: list[list[Any]]) -> list[list[Any]]:
        acc[v[0]].append(v[1])
        return acc

    return WindowFunction(create=lambda: [[], []], add=add, merge=lambda a, b: [a[0] + b[0], a[1] + b[1]],
                          emit=fire, serialize=ser, deserialize=de, append=append, layout=COGROUP_LAYOUT)


def window_join_function(fn: Callable[[Any, Any], Any], how: str, left_serde: Serde[Any],
                         right_serde: Serde[Any]) -> WindowFunction:
    """A co-group (:func:`window_co_group_function`) that, when a window fires, calls ``fn(left, right)``
    per pair (``None`` on the missing side for ``left``/``outer``); a ``None`` result emits nothing."""

    def emit(key: Any, w: TimeWindow, lefts: list[Any], rights: list[Any], out: Callable[[Any], None]) -> None:
        for lv in lefts:
            if rights:
                for rv in rights:
                    r = fn(lv, rv)
                    if r is not None:
                        out(r)
            elif how in ("left", "outer"):
                r = fn(lv, None)
                if r is not None:
                    out(r)
        if how == "outer" and not lefts:
            for rv in rights:
                r = fn(None, rv)
                if r is not None:
                    out(r)

    return window_co_group_function(emit, left_serde, right_serde)


class IntervalJoinOperator(KeyedProcessFunction):
    """Buffers both sides per key by timestamp; joins on arrival; the watermark cleans up.

    Lateness is Flink's rule: an element is late when ``ts < watermark`` (one *at* the watermark
    is joined). Buffers are kept until no on-time element can match them any more: a left
    element ``l`` matches right elements ``r <= l + upper``, and an on-time ``r`` has ``r >=
    watermark``, so ``l`` may go once the watermark reaches ``l + upper + 1``; a right element ``r``
    once it reaches ``r - lower + 1``. (Flink's operator drops ``l`` at watermark ``l + upper``, so
    an element exactly at the watermark can miss a match there; here it cannot.)

    Cleanup is time-indexed, not a timer per element (Flink registers one per element; Kafka Streams'
    join stores drop whole time segments): the operator keeps, in memory, the buffer entries of the
    task by *cleanup segment* (their expiry rounded up to ``step`` ms, a quarter of the join's span),
    and a single event-time timer at the next segment's end (registered under whichever key is
    current; a timer's key does not matter to cleanup). When it fires, every entry of every segment
    the watermark passed is deleted in one sweep and the next timer registered. Deleting a little
    later than possible changes no output: an expired entry cannot match an on-time element, and late
    ones are dropped before the lookup. The store's layout is unchanged (``key | side | ts -> list of
    values``), so changelogs restore as before; the index is rebuilt from one scan of the store on
    first use (after a restart, a restore, or an abort). Per-element timers of earlier versions still
    fire once and run a sweep. Timer times saturate to int64 (:mod:`kstreamlet.runtime.timers`).
    """

    def __init__(self, lower: int, upper: int, fn: Callable[[Any, Any], Any], left_serde: Serde[Any],
                 right_serde: Serde[Any], left_late_tag: str | None = None,
                 right_late_tag: str | None = None) -> None:
        self.lower, self.upper, self.fn = lower, upper, fn
        self.serdes = (left_serde, right_serde)
        # Late elements of a side go to its side output when tagged (Flink's sideOutputLeftLateData
        # / sideOutputRightLateData), else they are dropped.
        self.late_tags = (left_late_tag, right_late_tag)
        # A buffered element may go once the watermark reaches its timestamp + these.
        self._left_cleanup = upper + 1
        self._right_cleanup = 1 - lower
        #: Cleanup granularity (ms): entries are swept per segment of this length.
        self.step = max(1, (upper - lower) // 4)

    def open(self, ctx: RuntimeContext) -> None:
        self.store = ctx.raw_store("buffers")
        self._ser = (self.serdes[0].serialize, self.serdes[1].serialize)
        self._de = (self.serdes[0].deserialize, self.serdes[1].deserialize)
        self._unload()
        self.store.on_abort(self._unload)

    # --- the time index ------------------------------------------------------------------------------

    def _unload(self) -> None:
        """Forget the index (an abort or a rolled-back timer call changed the store under it)."""
        self._loaded = False
        #: segment -> buffer keys expiring in it; a heap of the segments.
        self._segments: dict[int, list[bytes]] = {}
        #: key prefix + side byte -> the store keys of that key and side's buffered entries, in key
        #: (= timestamp) order: an element reads the other side's matches by key (point reads of
        #: the few entries in its range) instead of opening a store scan.
        self._live: dict[bytes, list[bytes]] = {}
        self._heap: list[int] = []
        #: Times of cleanup timers this operator registered and that have not fired, and the earliest.
        self._pending: set[int] = set()
        self._next: int | None = None

    def _segment(self, side: int, ts: int) -> int:
        """The segment of an entry: its expiry rounded up to a multiple of ``step`` (÷ step)."""
        expiry = ts + (self._left_cleanup if side == LEFT else self._right_cleanup)
        return -((-expiry) // self.step)

    def _index(self, key: bytes, side: int, ts: int, head: bytes) -> int:
        """Index a new buffer entry ``key`` (``head``: its key prefix and side byte)."""
        same = self._live.get(head)
        if same is None:
            self._live[head] = [key]
        elif key > same[-1]:
            same.append(key)  # the usual case: timestamps of a key and side mostly rise
        else:
            bisect.insort(same, key)
        seg = self._segment(side, ts)
        keys = self._segments.get(seg)
        if keys is None:
            self._segments[seg] = [key]
            heapq.heappush(self._heap, seg)
        else:
            keys.append(key)
        return seg

    def _load(self, ctx: KeyedContext) -> None:
        for k, _ in self.store.iter_range(b"", None):
            n = key_prefix_length(k)
            self._index(k, k[n], _unpack_ts(k, n + 1)[0] - BIAS, k[:n + 1])
        self._loaded = True
        self._schedule(ctx)

    def _schedule(self, ctx: KeyedContext) -> None:
        """A cleanup timer at the end of the earliest segment, unless one is registered by then."""
        if not self._heap:
            return
        at = self._heap[0] * self.step
        if at > MAX_TIMESTAMP:
            at = MAX_TIMESTAMP
        if self._next is not None and self._next <= at:
            return
        self._pending.add(at)
        self._next = at
        ctx.timers.register_event_time(at)

    def _sweep(self, watermark: int) -> None:
        """Delete every entry of every segment that ended at or before ``watermark``."""
        heap, segments, step, delete, live = self._heap, self._segments, self.step, self.store.delete, self._live
        end_of_time = watermark >= MAX_TIMESTAMP
        while heap and (end_of_time or heap[0] * step <= watermark):
            for k in segments.pop(heapq.heappop(heap)):
                delete(k)
                head = k[:key_prefix_length(k) + 1]
                keys = live.get(head)
                if keys is not None:
                    # Expiry follows the timestamp, so a sweep takes a key's oldest entries first.
                    i = bisect.bisect_left(keys, k)
                    if i < len(keys) and keys[i] == k:
                        del keys[i]
                        if not keys:
                            del live[head]

    # --- records and timers --------------------------------------------------------------------------

    def _bound(self, prefix: bytes, side: int, ts: int) -> bytes:
        """The store key where ``side``'s entries at ``ts`` start, for ``ts`` past int64 too: before
        every entry of the side below ``MIN_TIMESTAMP``, after every one above ``MAX_TIMESTAMP``."""
        if ts > MAX_TIMESTAMP:
            return prefix + bytes((side + 1,))
        if ts < MIN_TIMESTAMP:
            return prefix + bytes((side,))
        return prefix + bytes((side,)) + _pack_ts(ts + BIAS)

    def process_element(self, value: tuple[int, Any], ctx: KeyedContext) -> None:
        side, v = value
        ts = ctx.timestamp
        if ts < ctx.current_watermark:
            # Late (Flink's IntervalJoinOperator.isLate: ts < watermark): the buffers it could match
            # may be cleaned already, so it could not be joined consistently: dropped, or sent to
            # the side's late-data output (Flink too).
            metrics.LATE_RECORDS.labels("interval_join").inc()
            tag = self.late_tags[side]
            _log.debug("late record", operator="interval_join", side=side, timestamp=ts,
                       watermark=ctx.current_watermark, side_output=tag is not None)
            if tag is not None:
                ctx.side_output(tag, v)
            return
        if not self._loaded:
            self._load(ctx)
        store = self.store
        prefix = key_prefix(ctx.key_bytes)
        head = prefix + _SIDES[side]
        k = head + _pack_ts(ts + BIAS)
        raw = store.get(k)
        item = self._ser[side](v)
        if raw is None:
            store.put(k, _LEN.pack(len(item)) + item)
            seg = self._index(k, side, ts, head)
            if self._next is None or seg * self.step < self._next:
                self._schedule(ctx)
        else:
            store.put(k, raw + _LEN.pack(len(item)) + item)
        # The other side's entries this element matches, in timestamp order.
        if side == LEFT:
            other, lo, hi = RIGHT, ts + self.lower, ts + self.upper
        else:
            other, lo, hi = LEFT, ts - self.upper, ts - self.lower
        keys = self._live.get(prefix + _SIDES[other])
        if keys is None:
            return  # the other side has nothing buffered for this key
        n = len(prefix) + 1
        de, fn, emit, get = self._de[other], self.fn, ctx.emit, store.get
        i = bisect.bisect_left(keys, self._bound(prefix, other, lo))
        j = bisect.bisect_left(keys, self._bound(prefix, other, hi + 1), i)
        for ok in keys[i:j]:
            oraw = get(ok)
            if oraw is None:
                continue
            ots = _unpack_ts(ok, n)[0] - BIAS
            out_ts = ts if ts > ots else ots
            for b in decode_list(oraw):
                r = fn(v, de(b)) if side == LEFT else fn(de(b), v)
                if r is not None:
                    emit(r, timestamp=out_ts)
        ctx.timestamp = ts

    def on_timer(self, ts: int, ctx: KeyedContext) -> None:
        # A cleanup timer (or, from an earlier version, an element's own): sweep up to the watermark.
        pending = self._pending
        pending.discard(ts)
        if ts == self._next:
            self._next = min(pending) if pending else None
        if not self._loaded:
            self._load(ctx)
        self._sweep(max(ts, ctx.current_watermark))
        self._schedule(ctx)


class TableJoinOperator(KeyedProcessFunction):
    """The table side (``RIGHT``) updates the key's value; each stream element (``LEFT``) looks it up."""

    def __init__(self, fn: Callable[[Any, Any], Any], how: str, table_serde: Serde[Any]) -> None:
        self.fn, self.how, self.table_serde = fn, how, table_serde

    def open(self, ctx: RuntimeContext) -> None:
        self.table = ctx.get_state(ValueStateDescriptor("table", self.table_serde))

    def process_element(self, value: tuple[int, Any], ctx: KeyedContext) -> None:
        side, v = value
        if side == RIGHT:
            self.table.update(v)  # None (tombstone) clears
            return
        current = self.table.value()
        if current is None and self.how == "inner":
            return
        r = self.fn(v, current)
        if r is not None:
            ctx.emit(r)


__all__ = ["LEFT", "RIGHT", "window_co_group_function", "window_join_function", "IntervalJoinOperator", "TableJoinOperator"]
