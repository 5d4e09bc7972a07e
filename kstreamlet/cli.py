"""Command line: ``kstreamlet run module:app [--workers N]`` and ``kstreamlet dev kafka up|down|status``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

from kstreamlet.errors import ConfigError, TopologyError
from kstreamlet.tools import dlq as dlq_tool
from kstreamlet.tools import reset as reset_tool
from kstreamlet.tools import state as state_tool
from kstreamlet.tools import topics as topics_tool


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (attribute defaults to ``app``)."""
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise SystemExit(f"kstreamlet: cannot import {module_name!r}: {e}") from None
    try:
        return getattr(module, attr or "app")
    except AttributeError:
        raise SystemExit(f"kstreamlet: module {module_name!r} has no attribute {attr or 'app'!r}") from None


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        app = load_app(args.app)
        overrides = {}
        if args.bootstrap_servers:
            overrides["bootstrap_servers"] = args.bootstrap_servers
        if args.instance_id:
            overrides["instance_id"] = args.instance_id
        if overrides:
            app.configure(**overrides)
        return int(app.run(workers=args.workers))
    except (ConfigError, TopologyError) as e:
        print(f"kstreamlet: {e}", file=sys.stderr)
        return 2


def _cmd_dev_kafka(args: argparse.Namespace) -> int:
    from kstreamlet.dev import kafka

    try:
        if args.action == "up":
            state = kafka.dev_up(port=args.port)
            print(json.dumps(state))
            print(f"export KSTREAMLET_BOOTSTRAP_SERVERS={state['bootstrap_servers']}", file=sys.stderr)
        elif args.action == "down":
            print("stopped" if kafka.dev_down() else "not running")
        else:
            status = kafka.dev_status()
            print(json.dumps(status) if status else "not running")
            return 0 if status else 1
    except kafka.KafkaStartError as e:
        print(f"kstreamlet: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kstreamlet", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run an app: kstreamlet run module:app")
    r.add_argument("app", help="module:attribute of the App (attribute defaults to 'app')")
    r.add_argument("--workers", type=int, default=int(os.environ.get("KSTREAMLET_WORKERS", "1")),
                   help="group members to fork in this process (default 1)")
    r.add_argument("--bootstrap-servers", help="overrides KSTREAMLET_BOOTSTRAP_SERVERS")
    r.add_argument("--instance-id", help="overrides KSTREAMLET_INSTANCE_ID (e.g. the pod name)")
    r.set_defaults(fn=_cmd_run)
    d = sub.add_parser("dev", help="local development infrastructure")
    dsub = d.add_subparsers(dest="what", required=True)
    k = dsub.add_parser("kafka", help="a local single-node Kafka broker (KRaft) from Kafka's jars")
    k.add_argument("action", choices=["up", "down", "status"])
    k.add_argument("--port", type=int, default=9092)
    k.set_defaults(fn=_cmd_dev_kafka)
    topics_tool.add_parser(sub)
    dlq_tool.add_parser(sub)
    state_tool.add_parser(sub)
    reset_tool.add_parser(sub)
    args = p.parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        p.error("--workers must be >= 1")
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
