"""``python -m bench <scenario|all|report> [options]``: kstreamlet benchmarks on a real broker.

Scenarios are modules of this package (see :data:`SCENARIOS`); ``all`` runs each in turn
with its own default options (``--quick``: small counts, one repeat) and then writes the
summary (``report``: bench/results/summary.md + summary.png + docs/performance.md from the
results JSON of every scenario). ``_worker`` is internal: the measured subprocess of a run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from types import ModuleType

#: Scenario name -> module (``NAME``, ``add_arguments``, ``run``, ``worker``). Add new ones here.
SCENARIOS = {
    "stateless": "bench.stateless",
    "stateful": "bench.stateful",
    "window": "bench.window",
    "join": "bench.join",
    "latency": "bench.latency",
    "restore": "bench.restore",
}

#: ``all --quick``: small counts and one repeat per scenario (a module's ``QUICK_ARGS`` wins).
QUICK_ARGS = {
    "stateless": ["--records", "100000", "--repeats", "1", "--sizes", "100", "--consumer", "tuned",
                  "--faust-timeout", "30"],
    "stateful": ["--records", "20000", "--repeats", "1"],
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(SCENARIOS[name])


def _known_only(p: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` without the options ``p`` does not know (a scenario may drop or rename one)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        opt = argv[i]
        takes_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
        if opt in p._option_string_actions:
            out += argv[i:i + (2 if takes_value else 1)]
        i += 2 if takes_value else 1
    return out


def _scenario_args(name: str, a: argparse.Namespace) -> argparse.Namespace:
    """The options ``all`` gives one scenario: its own defaults, ``--quick`` counts, the common overrides."""
    mod = _module(name)
    p = argparse.ArgumentParser(prog=f"python -m bench {name}")
    mod.add_arguments(p)
    known = {act.dest for act in p._actions}
    argv: list[str] = []
    if a.quick:
        argv += _known_only(p, list(getattr(mod, "QUICK_ARGS", None) or QUICK_ARGS.get(name, [])))
    if a.repeats is not None and "repeats" in known:
        argv += ["--repeats", str(a.repeats)]
    if a.kstreamlet_ref and "kstreamlet_ref" in known:
        argv += ["--kstreamlet-ref", a.kstreamlet_ref]
    if a.no_warmup and "no_warmup" in known:
        argv += ["--no-warmup"]
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        if len(argv) < 2 or argv[1] not in SCENARIOS:
            raise SystemExit(f"usage: python -m bench _worker {{{','.join(SCENARIOS)}}} ...")
        return int(_module(argv[1]).worker(argv[2:]))
    if argv[:1] == ["report"]:
        from bench import report

        return report.main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="scenario", required=True)
    for name in SCENARIOS:
        mod = _module(name)
        sp = sub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0])
        mod.add_arguments(sp)
    a = sub.add_parser("all", help="every scenario in turn, each with its own default options, then the report")
    a.add_argument("--quick", action="store_true",
                   help="small counts and one repeat per scenario (a smoke run of the whole suite, minutes not hours)")
    a.add_argument("--repeats", type=int, default=None, help="override every scenario's repeat count")
    a.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {list(SCENARIOS)}")
    a.add_argument("--no-warmup", action="store_true", help="skip the scenarios' warm-up runs")
    a.add_argument("--no-report", action="store_true", help="do not write the summary at the end")
    a.add_argument("--kstreamlet-ref", metavar="GIT_REF", help="measure kstreamlet at this git revision (every scenario)")
    sub.add_parser("report", help="write bench/results/summary.md, summary.png and docs/performance.md from the results JSON")
    args = p.parse_args(argv)
    if args.scenario != "all":
        return int(_module(args.scenario).run(args))
    names = [n for n in SCENARIOS if n in set(args.only.split(","))]
    if not names:
        raise SystemExit(f"no known scenario in --only {args.only!r}")
    code = 0
    t0 = time.monotonic()
    for name in names:
        sargs = _scenario_args(name, args)
        print(f"=== {name} === ({' '.join(f'{k}={v}' for k, v in vars(sargs).items() if v not in (None, False))})", flush=True)
        try:
            code = max(code, int(_module(name).run(sargs)))
        except (Exception, SystemExit) as e:  # noqa: BLE001 -- one broken scenario must not stop the suite
            print(f"=== {name} failed: {e!r}", flush=True)
            code = max(code, 1)
    print(f"=== all scenarios done in {time.monotonic() - t0:.0f} s", flush=True)
    if not args.no_report:
        from bench import report

        code = max(code, report.main([]))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
