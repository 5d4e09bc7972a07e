"""Tracing: W3C trace context through the pipeline, OpenTelemetry spans (``kstreamlet[otel]``).

What every app gets, whatever the setting (``topology/headers.py``): an input record's
``traceparent`` header reaches its outputs with the same trace id and flags and a new span id
per hop. The ``tracing`` setting (``KSTREAMLET_TRACING``) adds:

- ``w3c``: outputs of records without a ``traceparent`` start a new trace;
- ``otel``: the same, plus an OpenTelemetry span per checkpoint (``kstreamlet.checkpoint``,
  from the first batch after a commit to the commit: attributes app, instance, records,
  batches, duration) through the globally configured tracer provider (the application sets
  up the SDK and exporter, e.g. ``opentelemetry-instrument`` or ``TracerProvider`` +
  ``BatchSpanProcessor``). ``otel`` without ``opentelemetry-api`` installed fails at start.

For operators that do their own I/O (e.g. an async operator calling a service per record),
:func:`record_span` is a span per call, child of the record's trace context::

    from kstreamlet.observability import tracing

    async def enrich(value, ctx):
        with tracing.record_span("enrich.lookup", ctx.headers, {"customer": value["customer"]}):
            return await client.get(...)

It is a no-op (yields None) unless ``tracing="otel"`` and OpenTelemetry is installed, so the
operator need not check. :func:`inject` gives the headers of an outgoing request (the current
span's ``traceparent``, or the record's continued).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, Mapping

from kstreamlet.runtime.listener import RuntimeListener
from kstreamlet.topology.headers import (
    TRACEPARENT,
    continue_traceparent,
    new_span_id,
    parse_traceparent,
)

Headers = list[tuple[str, bytes]]

_mode = "off"
TRACER_NAME = "kstreamlet"


def otel_available() -> bool:
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


def configure(mode: str) -> None:
    """Set the process's tracing mode (the member does this from its settings)."""
    global _mode
    if mode not in ("off", "w3c", "otel"):
        raise ValueError(f"unknown tracing mode {mode!r}: off | w3c | otel")
    _mode = mode


def mode() -> str:
    return _mode


def traceparent(headers: Headers | Mapping[str, Any] | None) -> str | None:
    """The valid ``traceparent`` of a record's headers, else None."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        if name == TRACEPARENT and parse_traceparent(value) is not None:
            return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)
    return None


def _otel_context(headers: Headers | Mapping[str, Any] | None) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    tp = traceparent(headers)
    return TraceContextTextMapPropagator().extract({TRACEPARENT: tp}) if tp else None


@contextlib.contextmanager
def record_span(name: str, headers: Headers | Mapping[str, Any] | None = None,
                attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """An OpenTelemetry span ``name``, child of the record's ``traceparent`` (``headers``: e.g.
    ``ctx.headers``), current while the block runs; an exception is recorded on it and re-raised.
    Yields None (and does nothing) unless tracing is ``otel`` and OpenTelemetry is installed."""
    if _mode != "otel" or not otel_available():
        yield None
        return
    from opentelemetry import trace

    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(name, context=_otel_context(headers),
                                      attributes=dict(attributes or {})) as span:
        yield span


def inject(headers: Headers | Mapping[str, Any] | None = None) -> dict[str, str]:
    """Trace headers for an outgoing call: the current OpenTelemetry span's context if one is
    recording, else the record's ``traceparent`` continued with a new span id ({} without one)."""
    if _mode == "otel" and otel_available():
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        if trace.get_current_span().get_span_context().is_valid:
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier)
            return carrier
    nxt = continue_traceparent(traceparent(headers), new_span_id())
    return {TRACEPARENT: nxt.decode()} if nxt else {}


class CheckpointSpans(RuntimeListener):
    """A span per checkpoint (tracing="otel"): opened at the first batch after a commit, ended
    at the commit with the number of records and batches it covered."""

    def __init__(self, app: str, instance: str, tracer: Any = None) -> None:
        from opentelemetry import trace

        self.tracer = tracer or trace.get_tracer(TRACER_NAME)
        self.app, self.instance = app, instance
        self.span: Any = None
        self.records = 0
        self.batches = 0
        self.started = 0.0

    def before_batch(self, member: Any, records: list[Any]) -> None:
        if self.span is None:
            try:
                self.span = self.tracer.start_span("kstreamlet.checkpoint", attributes={
                    "kstreamlet.application.id": self.app, "kstreamlet.instance": self.instance})
                self.started = time.monotonic()
            except Exception:
                self.span = None

    def on_batch(self, member: Any, records: list[Any], processed: int) -> None:
        self.records += processed
        self.batches += 1

    def on_commit(self, member: Any, seconds: float) -> None:
        span, self.span = self.span, None
        if span is None:
            return
        try:
            span.set_attribute("kstreamlet.checkpoint.records", self.records)
            span.set_attribute("kstreamlet.checkpoint.batches", self.batches)
            span.set_attribute("kstreamlet.checkpoint.commit_seconds", seconds)
            span.end()
        except Exception:
            pass
        self.records = self.batches = 0
