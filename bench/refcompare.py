"""``python -m bench.refcompare --ref <git revision>``: kstreamlet against an earlier revision of
itself, in one invocation, on one broker, interleaved.

For a change that must not cost speed (a refactoring): the stateless upper-case pipeline
(exactly-once, commit 100 ms, 100 B values) and the word count (exactly-once, commit 1 s) run
``--repeats`` times for each tree, alternating which tree goes first, over the same input
topics. Each run is the scenario's own worker (bench/stateless.py, bench/stateful.py) with its
output verified; the revision's ``kstreamlet/`` is a ``git archive`` export
(``common.kstreamlet_root``). Reported: median CPU µs per record (the process's whole CPU time
over the timed window, librdkafka's threads included) and median records/s, and the ratios
working tree ÷ revision (CPU: lower is better; below 1.03 is within the 3% budget).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common, join, stateful, stateless
from bench import window as windowbench


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.refcompare", description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", required=True, help="git revision to compare the working tree with")
    p.add_argument("--records", type=int, default=300_000, help="stateless input records (default 300,000)")
    p.add_argument("--lines", type=int, default=100_000, help="word-count input lines (default 100,000)")
    p.add_argument("--window-records", type=int, default=200_000, help="window / join input records (default 200,000)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", default="stateless,stateful",
                   help="comma-separated subset of stateless,stateful,window,join")
    p.add_argument("--out", default="refcompare")
    a = p.parse_args(argv)
    from kstreamlet.dev.kafka import kafka_broker

    ref_dir, ref_code = common.kstreamlet_root(a.ref)
    new_dir, new_code = common.kstreamlet_root(None)
    trees = {"ref": ref_dir, "new": new_dir}
    labels = {"ref": ref_code["source"], "new": new_code["source"] + f" (HEAD {new_code['git_head']})"}
    only = set(a.only.split(","))
    log_dir = Path(tempfile.mkdtemp(prefix="kstreamlet-refcompare-"))
    print(f"refcompare: {labels['ref']} vs {labels['new']}, {a.repeats} repeats; logs in {log_dir}", flush=True)
    pythons = {"kstreamlet": sys.executable}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    t0 = time.monotonic()
    with kafka_broker() as broker:
        bootstrap = broker.bootstrap_servers
        if "stateless" in only:
            size = 100
            topic = common.unique("refcompare-stateless-in")
            common.create_topic(bootstrap, topic, stateless.PARTITIONS)
            common.load_input(bootstrap, topic, a.records, size, seed=7)
            args = argparse.Namespace(records=a.records, batch=1000, faust_timeout=60)
            setting = next(s for s in stateless.SETTINGS if s.key == "eos-100ms")
            suites = {k: stateless.Suite(args, bootstrap, {size: topic}, log_dir, d, pythons) for k, d in trees.items()}
            print("stateless (warm-up, then measured):", flush=True)
            for k in trees:
                suites[k].one_run("kstreamlet", setting, "tuned", f"warmup-{k}", size, target=50_000, verify=False)
            results["stateless"] = {k: [] for k in trees}
            for rep in range(a.repeats):
                for k in (("ref", "new") if rep % 2 == 0 else ("new", "ref")):
                    results["stateless"][k].append(
                        suites[k].one_run("kstreamlet", setting, "tuned", f"{k}-{rep + 1}", size))
        if "stateful" in only:
            expected = stateful.true_counts(a.lines, 7)
            topic = common.unique("refcompare-stateful-in")
            common.create_topic(bootstrap, topic, stateful.PARTITIONS)
            stateful.load_lines(bootstrap, topic, a.lines, 7)
            args = argparse.Namespace(records=a.lines, faust_timeout=60)
            wsuites = {k: stateful.Suite(args, bootstrap, topic, expected, log_dir, d, pythons) for k, d in trees.items()}
            print("word count (warm-up, then measured):", flush=True)
            for k in trees:
                wsuites[k].one_run("kstreamlet", "warmup", restore=False, verify=False)
            results["stateful"] = {k: [] for k in trees}
            for rep in range(a.repeats):
                for k in (("ref", "new") if rep % 2 == 0 else ("new", "ref")):
                    results["stateful"][k].append(wsuites[k].one_run("kstreamlet", f"{k}-{rep + 1}", restore=False))
        for scen in ("window", "join"):
            if scen in only:
                results[scen] = _throughput(scen, a, bootstrap, log_dir, trees, pythons)
    md = _report(a, labels, results, time.monotonic() - t0)
    md_path, json_path = common.write_results(a.out, md, {"scenario": "refcompare", "labels": labels,
                                                         "args": vars(a), "results": results})
    print()
    print(md)
    print(f"written {md_path} and {json_path}")
    bad = [r for runs in results.values() for rs in runs.values() for r in rs if r["status"] != "OK"]
    return 1 if bad else 0


def _throughput(scen: str, a: argparse.Namespace, bootstrap: str, log_dir: Path, trees: dict[str, Path],
                pythons: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The window (tumbling 10 s event-time aggregate) or interval-join scenario, both trees."""
    w = windowbench
    args = argparse.Namespace(records=a.window_records, repeats=a.repeats, seed=42, no_warmup=False)
    if scen == "window":
        topic = common.unique("refcompare-window-in")
        common.create_topic(bootstrap, topic, w.PARTITIONS)
        _, expected = w.load_readings(bootstrap, topic, a.window_records, 42)
        target = a.window_records + w.PARTITIONS
        sc = w.Scenario(w.NAME, "window", [topic], target, min(target, w.WARMUP_RECORDS),
                        lambda out: w.verify_windows(bootstrap, out, expected))
    else:
        left, right = common.unique("refcompare-join-left"), common.unique("refcompare-join-right")
        for t in (left, right):
            common.create_topic(bootstrap, t, join.PARTITIONS)
        _, jexpected = join.load_orders(bootstrap, left, right, a.window_records, 42)
        target = 2 * (a.window_records // 2) + 2 * join.PARTITIONS
        sc = w.Scenario(join.NAME, "join", [left, right], target, min(target, w.WARMUP_RECORDS),
                        lambda out: join.verify_join(bootstrap, out, jexpected))
    suites = {k: w.ThroughputSuite(args, sc, bootstrap, log_dir, d, pythons, None) for k, d in trees.items()}
    print(f"{scen} (warm-up, then measured):", flush=True)
    for k in trees:
        suites[k].one_run("kstreamlet", "warmup", verify=False)
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
    for rep in range(a.repeats):
        for k in (("ref", "new") if rep % 2 == 0 else ("new", "ref")):
            out[k].append(suites[k].one_run("kstreamlet", f"{k}-{rep + 1}"))
    return out


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get("status") == "OK" and r.get(key)]
    return statistics.median(vals) if vals else None


def _report(a: argparse.Namespace, labels: dict[str, str], results: dict[str, Any], wall: float) -> str:
    lines = [f"# kstreamlet vs an earlier revision ({time.strftime('%Y-%m-%d')})", "",
             f"`python -m bench.refcompare --ref {a.ref} --only {a.only} --records {a.records} --lines {a.lines} "
             f"--window-records {a.window_records} --repeats {a.repeats}`"
             f" — one broker, interleaved, {wall:.0f} s.", "",
             f"- ref: {labels['ref']}", f"- new: {labels['new']}", "",
             "| scenario | ref CPU µs/rec | new CPU µs/rec | CPU new÷ref | ref rec/s | new rec/s | rate new÷ref | runs OK |",
             "|---|---|---|---|---|---|---|---|"]
    names = {"stateless": "stateless upper-case, EOS 100 ms, 100 B", "stateful": "word count, EOS 1 s",
             "window": "tumbling 10 s event-time aggregate, EOS 1 s", "join": "interval join, EOS 1 s"}
    for scen, runs in results.items():
        cr, cn = _median(runs["ref"], "cpu_us_per_record"), _median(runs["new"], "cpu_us_per_record")
        rr, rn = _median(runs["ref"], "rate"), _median(runs["new"], "rate")
        ok = sum(1 for rs in runs.values() for r in rs if r["status"] == "OK")
        total = sum(len(rs) for rs in runs.values())
        f = lambda x, fmt: format(x, fmt) if x is not None else "—"  # noqa: E731
        ratio = lambda x, y: f"{x / y:.3f}" if x and y else "—"  # noqa: E731
        lines.append(f"| {names[scen]} | {f(cr, '.2f')} | {f(cn, '.2f')} | {ratio(cn, cr)} | {f(rr, ',.0f')} | "
                     f"{f(rn, ',.0f')} | {ratio(rn, rr)} | {ok}/{total} |")
        for k in ("ref", "new"):
            per = ", ".join(f"{r.get('cpu_us_per_record') or 0:.2f}" for r in runs[k])
            lines.append(f"|  {k} runs (CPU µs/rec) | {per} | | | | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
