"""``kstreamlet describe module:app [--format text|mermaid|json]``: the topology, without a broker."""

from __future__ import annotations

import argparse
import json
from typing import Any

from kstreamlet.cli.common import (FORMATTER, add_app_argument, add_connection_arguments, apply_setting_flags,
                                   config_errors, epilog, load_app)
from kstreamlet.topology.describe import FORMATS


def register(sub: Any) -> None:
    p = sub.add_parser(
        "describe", help="print the topology (as Kafka Streams' Topology#describe())", formatter_class=FORMATTER,
        description="Print the app's topology: sub-topologies, sources, processors and their stores, sinks, "
                    "internal topics (repartition, changelog, source buffers), broadcasts, custom sources. "
                    "Imports the app; connects to nothing.",
        epilog=epilog("kstreamlet describe services.wordcount:app",
                      "kstreamlet describe services.wordcount:app --format mermaid > topology.mmd",
                      "kstreamlet describe services.wordcount:app --json | jq '.internal_topics[].name'"))
    add_app_argument(p)
    p.add_argument("--format", choices=FORMATS, default="text", help="text (default), mermaid or json")
    p.add_argument("--json", action="store_const", const="json", dest="format", help="same as --format json")
    add_connection_arguments(p)
    p.set_defaults(fn=_describe)


@config_errors
def _describe(args: argparse.Namespace) -> int:
    app = apply_setting_flags(load_app(args.app), args)
    out = app.describe(args.format)
    if args.format == "json":
        print(json.dumps(out, indent=2, default=str))
    else:
        print(out, end="")
    return 0
