"""Restore scenario: restoring a large changelog (>= 1M distinct keys) after the local state is wiped.

The stateful word count (bench/stateful.py, the same workers and topology per system) over an
input of N lines of one distinct word each (``w0000000`` .. , N = 1M by default): the build run
counts every word once, so each system's changelog ends up with N records of N distinct keys
(one per key and checkpoint; Kafka Streams' record cache changes nothing here, every key is
written once). The build run's output is verified as in the stateful scenario (every word's
count is 1). Then, ``--repeats`` times, the same system starts on the same application id with
its state dir wiped and restores the whole changelog; timed as the stateful scenario's restore
runs (kstreamlet: assignment to "every store restored"; Quix: ``do_recovery``; Kafka Streams:
first ``onRestoreStart`` to last ``onRestoreEnd``) and reported as changelog records/s.

``--kstreamlet-ref REV``: kstreamlet's restores alternate between the working tree and ``REV``
(``git archive`` of its ``kstreamlet/``) on the same changelog, so one invocation gives the
ratio of a change to the restore path.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import common, stateful

NAME = "restore"
SYSTEMS = ("kstreamlet", "quix", "kafka_streams")
DEFAULT_RECORDS = 1_000_000
QUICK_ARGS = ["--records", "100000", "--repeats", "1"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", type=int, default=DEFAULT_RECORDS,
                   help=f"distinct words = changelog records (default {DEFAULT_RECORDS:,})")
    p.add_argument("--repeats", type=int, default=3, help="restores per system (and per kstreamlet revision)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {list(SYSTEMS)}")
    p.add_argument("--restore-timeout", type=float, default=600.0, help="seconds a restore may take (default 600)")
    p.add_argument("--no-verify", action="store_true", help="do not read back the build run's output")
    p.add_argument("--quix-python", default=None, help="python of a virtualenv with quixstreams")
    p.add_argument("--kstreamlet-ref", metavar="GIT_REF",
                   help="also restore with kstreamlet at this git revision, alternating with the working tree")
    p.add_argument("--out", default=NAME, help="results file stem under bench/results (default 'restore')")
    common.add_profile_argument(p)


def words(records: int) -> Any:
    return (f"w{i:07d}" for i in range(records))


def run(args: argparse.Namespace) -> int:
    from kstreamlet.dev.kafka import kafka_broker

    if getattr(args, "scenario", NAME) != NAME:  # under `python -m bench all`
        p = argparse.ArgumentParser()
        add_arguments(p)
        mine = p.parse_args([])
        for k in ("repeats", "kstreamlet_ref", "quix_python"):
            if getattr(args, k, None) is not None:
                setattr(mine, k, getattr(args, k))
        args = mine
    systems = [s for s in SYSTEMS if s in set(args.systems.split(","))]
    if not systems:
        raise SystemExit(f"no known system in --systems {args.systems!r}")
    info = common.machine_info()
    info.update(common.kstreamlet_root(None)[1])
    pythons = {"kstreamlet": sys.executable}
    variants: dict[str, list[tuple[str, Path]]] = {s: [(s, common.REPO_ROOT)] * args.repeats for s in systems}
    if args.kstreamlet_ref and "kstreamlet" in systems:
        ref_dir, ref_facts = common.kstreamlet_root(args.kstreamlet_ref)
        info["ref"] = ref_facts["source"]
        label = f"kstreamlet@{args.kstreamlet_ref}"
        variants["kstreamlet"] = [v for _ in range(args.repeats)
                                  for v in (("kstreamlet", common.REPO_ROOT), (label, ref_dir))]
    if "quix" in systems:
        pythons["quix"] = common.quix_python(args.quix_python)
        info["quix"] = common.quix_versions(pythons["quix"])
    if "kafka_streams" in systems:
        from bench import kafka_streams  # type: ignore[attr-defined]

        kafka_streams.ensure_jar()
        info["kafka_streams"] = kafka_streams.versions()
    log_dir = Path(tempfile.mkdtemp(prefix="kstreamlet-bench-restore-"))
    t_start = time.monotonic()
    print(f"bench restore: {args.records:,} distinct words, {args.repeats} restores per system, systems {systems}; "
          f"worker logs in {log_dir}", flush=True)
    expected: Counter[str] = Counter({w: 1 for w in words(args.records)}) if not args.no_verify else Counter()
    # stateful's Suite: one build run per system (not timed here), then the restore runs
    sargs = argparse.Namespace(records=args.records, faust_timeout=0, warmup_records=0,
                               restore_timeout=args.restore_timeout)
    with kafka_broker() as broker:
        bootstrap = broker.bootstrap_servers
        info["broker_backend"] = broker.backend
        in_topic = common.unique("bench-restore-in")
        common.create_topic(bootstrap, in_topic, stateful.PARTITIONS)
        load_s = stateful.load_lines(bootstrap, in_topic, args.records, args.seed, source=words(args.records))
        print(f"loaded input {in_topic}: {args.records:,} one-word lines in {load_s:.1f} s", flush=True)
        suite = stateful.Suite(sargs, bootstrap, in_topic, expected, log_dir, common.REPO_ROOT, pythons)
        suite.words_per_line = 1
        suite.restore_variants = variants
        if getattr(args, "profile", False) and "kstreamlet" in systems:
            suite.profile_restore = log_dir / "restore-kstreamlet.prof"
        print("build runs (each followed by its restores):", flush=True)
        for system in systems:
            suite.runs.append(suite.one_run(system, 1, restore=True, verify=not args.no_verify))
    info["loadavg_at_end"] = list(os.getloadavg())
    info["wall_seconds"] = round(time.monotonic() - t_start, 1)
    if suite.profile_restore is not None and suite.profile_run is not None:
        common.write_profile(args.out, suite.profile_restore, [
            f"kstreamlet restore of a {args.records:,}-record changelog ({args.records:,} distinct keys), state dir wiped; "
            "one extra restore after the measured ones"], suite.profile_run)
    md, summary = _report(args, systems, variants, suite.runs, suite.restores, info)
    data = {"scenario": NAME, "machine": info, "params": {"records": args.records, "repeats": args.repeats,
                                                          "partitions": stateful.PARTITIONS, "seed": args.seed},
            "summary": summary,
            # report.py reads runs[] (system, status, rate): here, the restore runs
            "runs": suite.restores, "build_runs": suite.runs, "profile_run": suite.profile_run,
            "args": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}}
    md_path, json_path = common.write_results(args.out, md, data)
    print()
    print(md)
    print(f"written {md_path} and {json_path}")
    bad = [r for r in suite.runs + suite.restores if r["status"] != "OK"]
    return 1 if bad else 0


def _report(args: argparse.Namespace, systems: list[str], variants: dict[str, list[tuple[str, Path]]],
            builds: list[dict[str, Any]], restores: list[dict[str, Any]], info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    labels = list(dict.fromkeys(label for s in systems for label, _ in variants[s]))
    summary: dict[str, Any] = {}
    rows = []
    for label in labels:
        mine = [r for r in restores if r["system"] == label]
        good = [r for r in mine if r["status"] == "OK"]
        summary[label] = {"rate": common.summarize(r["rate"] for r in good),
                          "seconds": common.summarize(r["seconds"] for r in good),
                          "records": common.summarize(r["records"] for r in good),
                          "cpu_us_per_record": common.summarize(r["cpu_us_per_record"] for r in good),
                          "ok": len(good), "failed": len(mine) - len(good)}
    k = (summary.get("kstreamlet") or {}).get("rate")
    for label in labels:
        s = summary[label]
        ratio = s["rate"]["median"] / k["median"] if k and s["rate"] else None
        s["ratio_to_kstreamlet"] = ratio
        rows.append([label, common.cell(s["rate"]), "—" if ratio is None else f"{ratio:.2f}", common.cell(s["records"]),
                     common.cell(s["seconds"], "{:.2f}"), common.cell(s["cpu_us_per_record"], "{:.1f}"),
                     f"{s['ok']}/{s['ok'] + s['failed']}"])
    fr = lambda x, f="{:.2f}": "—" if x is None else f.format(x)
    build_rows = [[r["system"], common.fmt_rate(r.get("rate")), fr(r.get("seconds")),
                   f"{r['verify']['output_records']:,}" if r.get("verify") else "not verified", r["status"]]
                  for r in builds]
    per = [[r["system"], str(i + 1), f"{r['records']:,}" if r.get("records") is not None else "—", fr(r.get("seconds")),
            common.fmt_rate(r.get("rate")), fr(r.get("cpu_us_per_record"), "{:.1f}"), r["status"]]
           for i, r in enumerate(restores)]
    cmd = f"python -m bench restore --records {args.records} --repeats {args.repeats}"
    if args.systems != ",".join(SYSTEMS):
        cmd += f" --systems {args.systems}"
    if args.kstreamlet_ref:
        cmd += f" --kstreamlet-ref {args.kstreamlet_ref}"
    if getattr(args, "profile", False):
        cmd += " --profile"
    ref_line = (f"- kstreamlet's restores alternate between the working tree (`kstreamlet`) and {info.get('ref')} "
                f"(`kstreamlet@{args.kstreamlet_ref}`) on the same changelog" if args.kstreamlet_ref else "")
    md = f"""# Restore benchmark: {args.records:,}-record changelog ({args.records:,} distinct keys) — {' vs '.join(labels)}

`{cmd}`

- date: {info['date']}
- machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB RAM; load average at start {', '.join(f'{x:.2f}' for x in info['loadavg_at_start'])}, at end {', '.join(f'{x:.2f}' for x in info['loadavg_at_end'])}
- kstreamlet: working tree (HEAD {info['git_head']}{', kstreamlet/ has uncommitted changes' if info.get('kstreamlet_dirty') else ''}); Kafka {info['kafka_version']} ({info['broker_backend']} broker, same machine)
- build: the stateful word count (bench/stateful.py) over {args.records:,} one-word lines, every word distinct, {stateful.PARTITIONS} partitions: each system's count store changelog then holds {args.records:,} records (one per key), exactly-once, commit 1 s
- restore: the same application id with the state dir wiped; timed from partition assignment (kstreamlet), `do_recovery` (Quix), first `onRestoreStart` (Kafka Streams) until every store partition is restored; records/s = changelog records restored ÷ that time; CPU µs/record = the worker process's CPU in that window
{ref_line}
- {args.repeats} restores per system; total wall time {info['wall_seconds']:.0f} s

{common.md_table(["system", "restore records/s median (min–max)", "÷ kstreamlet", "changelog records", "seconds", "CPU µs/record", "ok"], rows)}

## Build runs (not part of the comparison)

{common.md_table(["system", "records/s", "seconds", "output records", "status"], build_rows)}

## Restore runs

{common.md_table(["system", "#", "changelog records", "seconds", "records/s", "CPU µs/rec", "status"], per)}
"""
    return md, summary


def worker(argv: list[str]) -> int:
    return stateful.worker(argv)
