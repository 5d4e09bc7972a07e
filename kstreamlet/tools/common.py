"""What the operator commands share: settings and clients (resolved as ``kstreamlet run`` does),
errors with exit codes, JSON output, and parsing of times and durations."""

from __future__ import annotations

import argparse
import functools
import re
import sys
from datetime import datetime, timezone
from typing import Any, Callable

from confluent_kafka import KafkaError, KafkaException

from kstreamlet.loader import load_app
from kstreamlet.config import Settings, resolve_settings
from kstreamlet.errors import ConfigError, InspectionError, TopologyError
# The rendering of decoded data lives with the decoders; the tools take it from here.
from kstreamlet.state.inspect import bytes_fields, dumps, jsonable, show, text_or_base64  # noqa: F401

#: Placeholder application id of commands that need no app (``topics``): only the connection
#: settings (bootstrap servers, ``kafka_config``) of the resolved settings are used.
TOOLS_APPLICATION_ID = "kstreamlet-tools"

#: Exit codes of the commands.
EXIT_OK, EXIT_NOT_FOUND, EXIT_REFUSED = 0, 1, 2


class ToolError(Exception):
    """A command failed or refused: a one-line message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]",
                   help="Kafka bootstrap servers (overrides KSTREAMLET_BOOTSTRAP_SERVERS and the app's code)")


def add_json_arg(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON (for scripts)")


def subparser(sub: Any, name: str, help: str, examples: str, description: str | None = None) -> argparse.ArgumentParser:
    """A sub-command parser whose ``--help`` ends with ``examples``."""
    return sub.add_parser(name, help=help, description=description or help,
                          epilog="examples:\n" + examples.strip("\n"),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def tool_settings(bootstrap_servers: str | None = None) -> Settings:
    """Connection settings for commands without an app: ``--bootstrap-servers``, else
    ``KSTREAMLET_BOOTSTRAP_SERVERS``, else the default; ``KSTREAMLET_KAFKA_CONFIG`` applies."""
    overrides = {"bootstrap_servers": (bootstrap_servers, "flag --bootstrap-servers")} if bootstrap_servers else {}
    return resolve_settings({"application_id": TOOLS_APPLICATION_ID}, overrides)


def load_tool_app(spec: str, bootstrap_servers: str | None = None) -> Any:
    """The App at ``module:attribute`` (as ``kstreamlet run`` loads it), with ``--bootstrap-servers``
    applied over its code and environment settings."""
    app = load_app(spec)
    if not hasattr(app, "settings") or not hasattr(app, "topology"):
        raise ToolError(f"{spec} is not a kstreamlet App (got {type(app).__name__})")
    if bootstrap_servers:
        app.configure(bootstrap_servers=bootstrap_servers)
    return app


def client_config(settings: Settings) -> dict[str, Any]:
    """Bootstrap servers and the ``kafka_config`` passthrough (SASL/SSL) every client gets."""
    from kstreamlet.runtime.clients import client_config as base

    return {**base(settings), "log_level": 0}


def admin_client(settings: Settings, timeout: float = 8.0) -> Any:
    """An AdminClient on ``settings``' cluster; ToolError (exit 2) when no broker answers."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as e:
        raise ToolError(f"cannot reach Kafka at {settings.bootstrap_servers} within {timeout:g}s (--bootstrap-servers "
                        f"or KSTREAMLET_BOOTSTRAP_SERVERS; SASL/SSL via KSTREAMLET_KAFKA_CONFIG): {kafka_error_text(e)}"
                        ) from None
    return admin


def kafka_error_text(e: BaseException) -> str:
    err = e.args[0] if e.args else e
    return err.str() if isinstance(err, KafkaError) else str(err)


def kafka_error_code(e: BaseException) -> int | None:
    err = e.args[0] if e.args else None
    return err.code() if isinstance(err, KafkaError) else None


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: errors become one line on stderr and an exit code."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except (ToolError, InspectionError) as e:
            print(f"kstreamlet: {e}", file=sys.stderr)
            return e.code
        except (ConfigError, TopologyError) as e:
            print(f"kstreamlet: {e}", file=sys.stderr)
            return EXIT_REFUSED
        except KafkaException as e:
            print(f"kstreamlet: Kafka error: {kafka_error_text(e)}", file=sys.stderr)
            return EXIT_NOT_FOUND
        except BrokenPipeError:  # `| head`
            return EXIT_OK

    return run


# --- output -------------------------------------------------------------------------------------

# --- times ----------------------------------------------------------------------------------------

_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds of ``PT1H`` / ``P1DT2H30M`` / ``PT0.5S`` (ISO 8601, days and smaller) or a plain number of seconds."""
    t = text.strip()
    try:
        seconds = float(t)
    except ValueError:
        m = _ISO_DURATION.match(t)
        if not m or t.upper() in ("P", "PT") or t.upper().endswith("T"):
            raise ValueError(f"invalid duration {text!r}: use ISO 8601 like PT1H, P1DT12H, PT30M, or seconds") from None
        parts = {k: float(v) for k, v in m.groupdict().items() if v}
        seconds = parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)
    if seconds < 0:
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    return seconds


def parse_datetime_ms(text: str) -> int:
    """Epoch milliseconds of an ISO 8601 date-time (``2026-01-02T03:04:05Z``, ``...+01:00``,
    ``2026-01-02``); without an offset it is UTC."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"invalid date-time {text!r}: use ISO 8601 like 2026-01-02T03:04:05Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def format_ms(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time (for text output)."""
    try:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return str(ms)
