"""``kstreamlet run module:app [--workers N]``: join the group and process until SIGTERM."""

from __future__ import annotations

import argparse
import os
from typing import Any

from kstreamlet.cli.common import (FORMATTER, add_app_argument, add_connection_arguments, apply_setting_flags,
                                   config_errors, epilog, load_app)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run an app: one consumer-group member per worker", formatter_class=FORMATTER,
        description="Run an app until SIGTERM/SIGINT. Settings: flags > KSTREAMLET_* env > code > defaults; "
                    "the effective settings are logged once at start.",
        epilog=epilog("kstreamlet run services.wordcount:app",
                      "KSTREAMLET_COMMIT_INTERVAL=1 kstreamlet run mymodule:app --workers 2",
                      "kstreamlet run mymodule --bootstrap-servers kafka:9092 --instance-id pod-0"))
    add_app_argument(p)
    p.add_argument("--workers", type=int, default=int(os.environ.get("KSTREAMLET_WORKERS", "1")),
                   help="group members to fork in this process (default $KSTREAMLET_WORKERS or 1)")
    add_connection_arguments(p)
    p.add_argument("--instance-id", help="stable instance id (e.g. the pod name); beats KSTREAMLET_INSTANCE_ID")
    p.add_argument("--allow-topology-change", action="store_true", default=None,
                   help="start although stores changed against the recorded topology (intended; reset them "
                        "first): setting allow_topology_change")
    p.set_defaults(fn=_run, check=_check)


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.workers < 1:
        parser.error("--workers must be >= 1")


@config_errors
def _run(args: argparse.Namespace) -> int:
    app = apply_setting_flags(load_app(args.app), args)
    return int(app.run(workers=args.workers))
