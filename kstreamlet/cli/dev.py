"""``kstreamlet dev kafka|mysql up|down|status``: local infrastructure for development.

``up`` prints ``export VAR=value`` on stdout (and what happened on stderr), so
``eval "$(kstreamlet dev kafka up)"`` points this shell at it; ``--json`` prints the state
as JSON instead. ``status`` prints the state as JSON (exit 1 when not running)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any, Callable

from kstreamlet.cli.common import FORMATTER, CliError, epilog


def register(sub: Any) -> None:
    d = sub.add_parser("dev", help="local development infrastructure (Kafka broker, MariaDB)",
                       formatter_class=FORMATTER, description=__doc__,
                       epilog=epilog('eval "$(kstreamlet dev kafka up)"', "kstreamlet dev kafka up --port 9093",
                                     "kstreamlet dev kafka status", 'eval "$(kstreamlet dev mysql up)"',
                                     "kstreamlet dev mysql down"))
    dsub = d.add_subparsers(dest="what", required=True, metavar="SERVER")
    k = dsub.add_parser("kafka", help="a detached single-node KRaft broker from Apache Kafka's jars",
                        formatter_class=FORMATTER,
                        epilog=epilog('eval "$(kstreamlet dev kafka up)"   # 127.0.0.1:9092',
                                      "kstreamlet dev kafka up --port 9093 --json",
                                      'eval "$(kstreamlet dev kafka up --secure)"   # SASL_SSL login exported',
                                      "kstreamlet dev kafka down"))
    k.add_argument("action", choices=["up", "down", "status"])
    k.add_argument("--port", type=int, default=None,
                   help="broker port on 127.0.0.1 for `up` (default 9092); another port than the running "
                        "broker's is an error")
    k.add_argument("--json", action="store_true", help="`up`: print the broker's state as JSON, not an export line")
    k.add_argument("--secure", action="store_true",
                   help="`up`: also a SASL_SSL listener (SCRAM-SHA-512 over a throwaway CA, ACLs on); the export "
                        "lines then point the app at it with its login (docs/security.md)")
    k.set_defaults(fn=_kafka)
    m = dsub.add_parser("mysql", help="a detached private MariaDB (the OS package's mariadbd)",
                        formatter_class=FORMATTER,
                        epilog=epilog('eval "$(kstreamlet dev mysql up)"   # exports KSTREAMLET_MYSQL_URL',
                                      "kstreamlet dev mysql up --port 3307", "kstreamlet dev mysql down",
                                      note="`python -m kstreamlet.dev.mysql` runs one in the foreground instead."))
    m.add_argument("action", choices=["up", "down", "status"])
    m.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 for `up` (default: a free one)")
    m.add_argument("--json", action="store_true", help="`up`: print the server's state as JSON, not an export line")
    m.set_defaults(fn=_mysql)


def _check_port(port: int | None) -> None:
    if port is not None and not 1 <= port <= 65535:
        raise CliError(f"--port must be 1-65535, got {port}")


def _serve(action: str, args: argparse.Namespace, what: str, var: str, key: str,
           up: Callable[[int | None], dict[str, object]], down: Callable[[], bool],
           status: Callable[[], dict[str, object] | None]) -> int:
    if action == "up":
        _check_port(args.port)
        state = up(args.port)
        if args.json:
            print(json.dumps(state))
        elif isinstance(state.get("env"), dict):  # a secured broker: the whole login
            for name, value in state["env"].items():  # type: ignore[attr-defined]
                print(f"export {name}={shlex.quote(str(value))}")
        else:
            print(f"export {var}={state[key]}")
        verb = "started" if state.get("started") else "already running"
        print(f"kstreamlet: dev {what} {verb} at {state[key]} (pid {state['pid']}); "
              f'eval "$(kstreamlet dev {args.what} up)" exports {var}', file=sys.stderr)
        return 0
    if action == "down":
        print("stopped" if down() else "not running")
        return 0
    current = status()
    print(json.dumps(current) if current else "not running")
    return 0 if current else 1


def _kafka(args: argparse.Namespace) -> int:
    from kstreamlet.dev import kafka

    try:
        secure = bool(getattr(args, "secure", False))
        return _serve(args.action, args, "Kafka broker", "KSTREAMLET_BOOTSTRAP_SERVERS",
                      "sasl_bootstrap_servers" if secure else "bootstrap_servers",
                      lambda port: kafka.dev_up(port, secure=secure), kafka.dev_down, kafka.dev_status)
    except kafka.KafkaStartError as e:
        raise CliError(str(e)) from None


def _mysql(args: argparse.Namespace) -> int:
    from kstreamlet.dev import mysql

    try:
        return _serve(args.action, args, "MariaDB", "KSTREAMLET_MYSQL_URL", "url",
                      mysql.dev_up, mysql.dev_down, mysql.dev_status)
    except mysql.MySQLStartError as e:
        raise CliError(str(e)) from None
