"""Output headers: what a sink writes as the headers of each output record.

By default an output carries the headers of the input record it came from (Kafka Streams'
record context), with kstreamlet's internal headers (``kstreamlet.*``: watermarks, DLQ error
headers) stripped, and a W3C ``traceparent`` continued: same trace id and flags, a new span
id per hop (one per input record and task; every output of that record shares it). Per sink,
``to(topic, headers=...)``:

- ``"propagate"`` (default): as above;
- ``"drop"``: no input headers (a ``traceparent`` is still continued, or started when tracing is on);
- a callable ``fn(key, value, headers) -> headers``: gets the propagated headers (a list of
  ``(name, bytes)``, traceparent already continued) and returns those to write (None = none).

Outputs without an input record — those emitted by timers (window results fired by the
watermark, processing-time timers) — carry no input headers. Without an incoming
``traceparent`` none is invented, unless the ``tracing`` setting is ``w3c`` or ``otel``: then
each such output starts a new trace.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from kstreamlet.api.task import TaskServices as Task

Headers = list[tuple[str, bytes]]
HeadersFn = Callable[[Any, Any, Headers], "Headers | None"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: Headers kstreamlet writes for itself; never propagated to outputs.
INTERNAL_PREFIX = "kstreamlet."

MODES = ("propagate", "drop")
_HEX = set("0123456789abcdef")


def check_mode(headers: Any) -> Any:
    if headers in MODES or callable(headers):
        return headers
    raise ValueError(f"headers= must be 'propagate', 'drop' or a callable (key, value, headers) -> headers, "
                     f"got {headers!r}")


def new_span_id() -> str:
    return os.urandom(8).hex()


def new_trace_id() -> str:
    return os.urandom(16).hex()


def parse_traceparent(value: bytes | str | None) -> tuple[str, str, str, str] | None:
    """``(version, trace id, parent id, flags)`` of a valid W3C traceparent, else None."""
    if value is None:
        return None
    try:
        s = value.decode("ascii") if isinstance(value, (bytes, bytearray)) else value
    except UnicodeDecodeError:
        return None
    parts = s.strip().split("-")
    if len(parts) < 4:
        return None
    version, trace_id, parent_id, flags = parts[:4]
    if len(version) != 2 or version == "ff" or len(trace_id) != 32 or len(parent_id) != 16 or len(flags) != 2:
        return None
    if not (set(version + trace_id + parent_id + flags) <= _HEX):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16 or (version == "00" and len(parts) != 4):
        return None
    return version, trace_id, parent_id, flags


def continue_traceparent(value: bytes | str | None, span_id: str) -> bytes | None:
    """The traceparent of the next hop: the same trace id and flags, ``span_id`` as parent id."""
    tp = parse_traceparent(value)
    if tp is None:
        return None
    return f"00-{tp[1]}-{span_id}-{tp[3]}".encode()


def start_traceparent(sampled: bool = True) -> bytes:
    return f"00-{new_trace_id()}-{new_span_id()}-{'01' if sampled else '00'}".encode()


def propagate(headers: Headers | None, span_id: str | None) -> Headers:
    """Input headers as an output carries them: internal ones stripped, traceparent continued."""
    if not headers:
        return []
    out: Headers = []
    for name, value in headers:
        if name.startswith(INTERNAL_PREFIX):
            continue
        if name == TRACEPARENT:
            nxt = continue_traceparent(value, span_id or new_span_id())
            if nxt is None:
                continue  # malformed: dropped (W3C: a vendor must not forward an invalid traceparent)
            value = nxt
        out.append((name, value if isinstance(value, bytes) or value is None else bytes(value)))
    return out


def carried(task: "Task") -> Callable[[Any, Headers], Headers | None]:
    """The default (``propagate``, tracing off) for an input message ``m`` with non-empty headers
    ``h``: the sink's hot path checks ``h`` itself, so a record without headers costs one call of
    ``m.headers()``."""
    last: list[Any] = [None, None]

    def carry(m: Any, h: Headers) -> Headers | None:
        if task.firing_timers:
            return None
        if last[0] is not m:
            last[0], last[1] = m, new_span_id()
        return propagate(h, last[1]) or None

    return carry


def output_headers(task: "Task", mode: Any, start_traces: bool) -> Callable[[Any, Any], Headers | None]:
    """``headers_of(key, value)`` for a sink of ``task``: the output's headers per ``mode``.

    Per record it reads the task's current input message (``task.msg``; none while timers
    fire). The hop's span id is drawn once per input message."""
    fn: HeadersFn | None = mode if callable(mode) else None
    drop = mode == "drop"
    last: list[Any] = [None, None]  # input message, span id of this hop

    def span_for(m: Any) -> str:
        if last[0] is not m:
            last[0], last[1] = m, new_span_id()
        return last[1]  # type: ignore[no-any-return]

    def headers_of(k: Any, v: Any) -> Headers | None:
        m = None if task.firing_timers else task.msg
        h = m.headers() if m is not None else None
        out: Headers
        if not h:
            out = [(TRACEPARENT, start_traceparent())] if start_traces else []
        elif drop:
            out = []
            for name, value in h:
                if name == TRACEPARENT:
                    nxt = continue_traceparent(value, span_for(m))
                    if nxt is not None:
                        out.append((TRACEPARENT, nxt))
        else:
            out = propagate(h, span_for(m))
        if start_traces and not any(name == TRACEPARENT for name, _ in out):
            out.append((TRACEPARENT, start_traceparent()))
        if fn is not None:
            return fn(k, v, out) or None
        return out or None

    return headers_of
