"""``python -m bench <scenario|all> [options]``: kstreamlet benchmarks on a real broker.

Scenarios are modules of this package (see :data:`SCENARIOS`); ``all`` runs each in turn
with the same options. ``_worker`` is internal: the measured subprocess of a run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

#: Scenario name -> module (``NAME``, ``add_arguments``, ``run``, ``worker``). Add new ones here.
SCENARIOS = {"stateless": "bench.stateless", "stateful": "bench.stateful"}


def _module(name: str) -> ModuleType:
    return importlib.import_module(SCENARIOS[name])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        if len(argv) < 2 or argv[1] not in SCENARIOS:
            raise SystemExit(f"usage: python -m bench _worker {{{','.join(SCENARIOS)}}} ...")
        return int(_module(argv[1]).worker(argv[2:]))
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="scenario", required=True)
    for name in SCENARIOS:
        mod = _module(name)
        sp = sub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0])
        mod.add_arguments(sp)
    a = sub.add_parser("all", help="every scenario in turn (options as for the scenarios; today: stateless)")
    # Today every scenario takes the stateless options; a later scenario with other options
    # should give `all` its own defaults here.
    _module("stateless").add_arguments(a)
    args = p.parse_args(argv)
    if args.scenario == "all":
        code = 0
        for name in SCENARIOS:
            print(f"=== {name} ===", flush=True)
            code = max(code, int(_module(name).run(args)))
        return code
    return int(_module(args.scenario).run(args))


if __name__ == "__main__":
    raise SystemExit(main())
