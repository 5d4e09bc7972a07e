"""What every command shares: loading ``module:app``, the connection flags, one-line errors."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
from typing import Any, Callable

from kstreamlet.loader import load_app
from kstreamlet.errors import ConfigError, TopologyError

#: Exit code of a usage or configuration error (argparse uses it too).
EXIT_CONFIG = 2


class CliError(Exception):
    """A failure the user fixes from one line: printed as ``kstreamlet: <message>``, exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.code = code

    def report(self) -> int:
        print(f"kstreamlet: {self}", file=sys.stderr)
        return self.code


def version_string() -> str:
    """``kstreamlet X (confluent-kafka Y, librdkafka Z, Python W)``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("kstreamlet")
    except PackageNotFoundError:  # running from a source tree without installing
        own = "unknown"
    try:
        import confluent_kafka

        ck = confluent_kafka.version()
        clients = (f"confluent-kafka {ck[0] if isinstance(ck, tuple) else ck}, "
                   f"librdkafka {confluent_kafka.libversion()[0]}")
    except Exception:  # pragma: no cover - confluent-kafka is a dependency
        clients = "confluent-kafka missing"
    return f"kstreamlet {own} ({clients}, Python {platform.python_version()})"


def add_app_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", metavar="MODULE:APP", help="module:attribute of the App (attribute defaults to 'app')")


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    """``--bootstrap-servers``: the same flag, meaning and precedence in every command."""
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]",
                   help="Kafka bootstrap servers; beats KSTREAMLET_BOOTSTRAP_SERVERS and the app's code")


#: Flags that are settings: argparse dest -> setting name.
SETTING_FLAGS = {"bootstrap_servers": "bootstrap_servers", "instance_id": "instance_id",
                 "allow_topology_change": "allow_topology_change"}


def apply_setting_flags(app: Any, args: argparse.Namespace) -> Any:
    """Give the app the setting flags that were passed (source ``flag --<name>``; they beat env and code)."""
    for dest, setting in SETTING_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            app.configure(_source=f"flag --{dest.replace('_', '-')}", **{setting: value})
    return app


def bootstrap_servers(args: argparse.Namespace, app: Any = None) -> str:
    """Bootstrap servers for a command: the flag, else the app's effective setting, else
    ``KSTREAMLET_BOOTSTRAP_SERVERS``, else the default (for commands that have no app)."""
    flag = getattr(args, "bootstrap_servers", None)
    if flag:
        return str(flag)
    if app is not None:
        return str(app.settings.bootstrap_servers)
    from kstreamlet.config import Settings

    env = os.environ.get("KSTREAMLET_BOOTSTRAP_SERVERS")
    return env or str(Settings.model_fields["bootstrap_servers"].default)


def config_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn ConfigError / TopologyError into one line on stderr and exit code 2."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (ConfigError, TopologyError) as e:
            raise CliError(str(e)) from None

    wrapped.__doc__ = fn.__doc__
    return wrapped


def epilog(*examples: str, note: str = "") -> str:
    text = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return text + (f"\n\n{note}" if note else "")


FORMATTER = argparse.RawDescriptionHelpFormatter
