"""structlog setup: JSON lines when stderr is not a terminal (pods), pretty console otherwise."""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    lvl = getattr(logging, level.upper(), logging.INFO)
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")


# --- librdkafka's own log lines ---------------------------------------------------------------------

_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error",
           logging.CRITICAL: "critical"}


class _StructlogHandler(logging.Handler):
    """Renders librdkafka's log lines (``logger.log(level, "%s [%s] %s", facility, client, text)``
    from confluent-kafka) as structlog events ``librdkafka`` with the member's context."""

    def __init__(self, **context: object) -> None:
        super().__init__(logging.DEBUG)
        self._context = context

    def emit(self, record: logging.LogRecord) -> None:
        try:
            args = record.args
            if isinstance(args, tuple) and len(args) == 3:
                facility, client, text = args
            else:
                facility, client, text = None, None, record.getMessage()
            level = _LEVELS.get(record.levelno) or ("critical" if record.levelno > logging.ERROR else "debug")
            logger = structlog.get_logger("kstreamlet.librdkafka")
            getattr(logger, level)("librdkafka", facility=facility, client=client, message=str(text), **self._context)
        except Exception:  # a log line must never break the client thread that serves it
            self.handleError(record)


def librdkafka_logger(**context: object) -> logging.Logger:
    """A ``logging.Logger`` for confluent-kafka's ``logger`` setting: librdkafka's lines become
    JSON events through structlog (with ``context``, e.g. app and instance) instead of raw
    ``%3|...`` lines on stderr. Clients serve them on ``poll``/``consume``."""
    logger = logging.Logger(f"kstreamlet.librdkafka.{id(context)}", logging.DEBUG)
    logger.propagate = False
    logger.addHandler(_StructlogHandler(**context))
    return logger
