"""Command line: ``kstreamlet run|describe|dev|topics|dlq|state|reset|acls ...`` (``kstreamlet --help`` lists them).

One module per command group, each with ``register(subparsers)``: adding a group is one
import and one call in :func:`build_parser`. Shared pieces (loading ``module:app``, the
``--bootstrap-servers`` flag, one-line errors with exit code 2) are in
:mod:`kstreamlet.cli.common`.
"""

from __future__ import annotations

import argparse

from kstreamlet.cli import describe, dev, run
from kstreamlet.cli.common import CliError, load_app, version_string
from kstreamlet.tools import acls as acls_tool
from kstreamlet.tools import dlq as dlq_tool
from kstreamlet.tools import reset as reset_tool
from kstreamlet.tools import state as state_tool
from kstreamlet.tools import topics as topics_tool

_EPILOG = """\
examples:
  kstreamlet run services.wordcount:app --workers 2
  kstreamlet describe services.wordcount:app --format mermaid
  eval "$(kstreamlet dev kafka up)"      # start a local broker, export KSTREAMLET_BOOTSTRAP_SERVERS
  kstreamlet dev mysql up --port 3307
  kstreamlet topics create orders -p 6
  kstreamlet dlq show services.wordcount:app
  kstreamlet state scan services.wordcount:app counts
  kstreamlet reset services.wordcount:app --dry-run

settings: CLI flags > KSTREAMLET_* environment > values in code > defaults; the effective
settings and where each came from are logged once at start (see docs/settings.md).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kstreamlet", description="Kafka-Streams-style stream processing for Python.",
                                epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=version_string())
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    run.register(sub)
    describe.register(sub)
    dev.register(sub)
    topics_tool.add_parser(sub)
    dlq_tool.add_parser(sub)
    state_tool.add_parser(sub)
    reset_tool.add_parser(sub)
    acls_tool.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    if check is not None:
        check(parser, args)
    try:
        return int(args.fn(args))
    except CliError as e:
        return e.report()
    except BrokenPipeError:  # `kstreamlet describe ... | head`: the reader left; not an error
        import os
        import sys

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


__all__ = ["main", "build_parser", "load_app"]
