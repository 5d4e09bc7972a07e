"""Join scenario: interval join of orders and shipments, exactly-once — kstreamlet vs Quix Streams vs Kafka Streams.

Input (see bench/SCENARIOS.md): N/2 orders on ``left`` and their shipments on ``right``
(key ``o00000000``.., murmur2-partitioned, 100-byte values), left at ``T0 + 2 i``, right
at ``T0 + 2 i + d_i`` with ``d_i`` uniform in [-1000, +2000] ms for 90 % of the orders and
+10 s (no match) for the rest; each topic in timestamp order, then one ``__flush__`` record
per partition of each topic 60 s of event time later. Work: inner interval join on the key
with ``right.ts ∈ [left.ts − 2000, left.ts + 3000]`` (inclusive), output ``left|right``,
exactly-once, commit 1 s, RocksDB state with a changelog.

- kstreamlet: ``left.keyed().interval_join(right.keyed()).between(-2000, 3000).apply(...)``
  (both bounds inclusive; default watermarks: each input is in timestamp order);
- Quix Streams: ``left.join_interval(right, backward_ms=2000, forward_ms=3000, on_merge=...)``
  — a left record looks up right records in [ts − 2000, ts], a right record left records in
  [ts − 3000, ts], both inclusive, so every pair in the interval is found once provided
  records are processed in timestamp order across the two topics, which Quix does for joins
  (its consumer buffers co-partitioned topics and pops the smallest timestamp next);
- Kafka Streams: ``left.join(right, JoinWindows.ofTimeDifferenceAndGrace(...).before(2 s).after(3 s))``.

Timing and report as bench/window.py (whose machinery this module reuses); target = N + 12.
Verification: exactly the matching orders, once each, with ``left value|right value``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from bench import window as w

NAME = "join"
PARTITIONS = w.PARTITIONS
SYSTEMS = w.SYSTEMS
T0 = w.T0
LOWER_MS = -2000
UPPER_MS = 3000
MATCH_SHARE = 0.9
NO_MATCH_DELAY_MS = 10_000
VALUE_SIZE = 100
#: Quix ``grace_ms`` of the join stores: Quix expires a key's entries older than its newest
#: timestamp minus the grace; every order has one record per side, so it never cuts a match.
QUIX_GRACE_MS = 4000
DEFAULT_RECORDS = 200_000
QUICK_ARGS = ["--records", "20000", "--repeats", "1"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    w.add_arguments(p, default_records=DEFAULT_RECORDS, name=NAME)


# --- input ------------------------------------------------------------------------------------

def orders(records: int, seed: int) -> Any:
    """``(key, left_ts, left_value, right_ts, right_value)`` per order (deterministic for ``seed``)."""
    rng = random.Random(seed)
    for i in range(records // 2):
        d = rng.randint(-1000, 2000) if rng.random() < MATCH_SHARE else NO_MATCH_DELAY_MS
        lts = T0 + 2 * i
        yield (b"o%08d" % i, lts, (b"L%d" % i).ljust(VALUE_SIZE, b"x"), lts + d,
               (b"R%d" % i).ljust(VALUE_SIZE, b"x"))


def load_orders(bootstrap: str, left: str, right: str, records: int, seed: int) -> tuple[float, dict[bytes, bytes]]:
    """Produce both topics (each in timestamp order, then the flush records); return
    (seconds, expected output: order id -> ``left|right``)."""
    p = w.new_producer(bootstrap)
    order = w.OrderCheck()
    rights: list[tuple[int, bytes, bytes]] = []
    expected: dict[bytes, bytes] = {}
    max_ts = 0
    seq = 0
    t0 = time.monotonic()
    for key, lts, lv, rts, rv in orders(records, seed):
        w.produce(p, left, lv, key, lts, on_delivery=order.callback(seq))
        seq += 1
        rights.append((rts, key, rv))
        if LOWER_MS <= rts - lts <= UPPER_MS:
            expected[key] = lv + b"|" + rv
        max_ts = max(max_ts, lts, rts)
        if seq % 10_000 == 0:
            p.poll(0)
    rights.sort(key=lambda r: r[0])  # stable: equal timestamps stay in order id order
    for rts, key, rv in rights:
        w.produce(p, right, rv, key, rts, on_delivery=order.callback(seq))
        seq += 1
        if seq % 10_000 == 0:
            p.poll(0)
    for topic in (left, right):
        for part in range(PARTITIONS):
            w.produce(p, topic, b"flush", w.FLUSH_KEY, max_ts + w.FLUSH_AFTER_MS, partition=part,
                      on_delivery=order.callback(seq))
            seq += 1
    if p.flush(120):
        raise RuntimeError("input records not acknowledged")
    order.check()
    return time.monotonic() - t0, expected


def verify_join(bootstrap: str, topic: str, expected: dict[bytes, bytes]) -> dict[str, Any]:
    return common.verify_exact(
        common.read_topic(bootstrap, topic, PARTITIONS), expected, "joined orders",
        key_of=lambda k: k, value_of=lambda v: v, is_flush=lambda k: k == w.FLUSH_KEY,
        show=lambda k, got, exp: f"{k!r}: got {got[:24]!r}..., expected {exp[:24]!r}...")


# --- workers ----------------------------------------------------------------------------------------

def _joined(lv: bytes, rv: bytes) -> bytes:
    return lv + b"|" + rv


def _kstreamlet_join(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any]) -> None:
    from kstreamlet import serdes

    w.kstreamlet_facts(facts)
    app = w.kstreamlet_app(a)
    left = app.stream(a.in_topic, key_serde=serdes.BYTES, value_serde=serdes.BYTES)
    right = app.stream(a.in_topic2, key_serde=serdes.BYTES, value_serde=serdes.BYTES)
    (left.keyed()
        .interval_join(right.keyed())
        .between(LOWER_MS, UPPER_MS)
        .apply(_joined, output_serde=serdes.BYTES, name="orders-shipments")
        .to(a.out_topic, key_serde=serdes.BYTES, value_serde=serdes.BYTES))
    w.run_kstreamlet_to_target(app, probe, a.target, a.timeout, a.profile_out)


def _quix_join(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any]) -> None:
    def build(**kw: Any) -> Any:
        app = w.quix_application(a, facts, **kw)
        # str values: Quix keeps the join buffers as JSON, which has no bytes (the values are ASCII).
        lt = app.topic(a.in_topic, key_deserializer="bytes", value_deserializer="str")
        rt = app.topic(a.in_topic2, key_deserializer="bytes", value_deserializer="str")
        out_t = app.topic(a.out_topic, key_serializer="bytes", value_serializer="str")
        joined = app.dataframe(lt).join_interval(app.dataframe(rt), how="inner", on_merge=lambda lv, rv: lv + "|" + rv,
                                                  grace_ms=QUIX_GRACE_MS, name="orders-shipments",
                                                  backward_ms=-LOWER_MS, forward_ms=UPPER_MS)
        joined.to_topic(out_t)
        return app

    common.run_quix_to_target(build, probe, a.target, a.timeout)


def worker(argv: list[str]) -> int:
    return w.worker_main(argv, NAME, ("kstreamlet", "quix"), {"kstreamlet": _kstreamlet_join, "quix": _quix_join})


# --- parent -------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    from kstreamlet.dev.kafka import kafka_broker

    systems = w.select_systems(args, SYSTEMS)
    info = common.machine_info()
    ks_dir, code = common.kstreamlet_root(args.kstreamlet_ref)
    info.update(code)
    systems, pythons, ks = w.prepare_systems(args, systems, info)
    t_start = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix=f"kstreamlet-bench-{NAME}-"))
    n_orders = args.records // 2
    target = 2 * n_orders + 2 * PARTITIONS
    print(f"bench {NAME}: {n_orders:,} orders ({2 * n_orders:,} records), {args.repeats} repeats, systems {systems}; "
          f"kstreamlet from {code['source']} ({ks_dir / 'kstreamlet'}); worker logs in {log_dir}", flush=True)
    with kafka_broker() as broker:
        bootstrap = broker.bootstrap_servers
        info["broker_backend"] = broker.backend
        left, right = common.unique(f"bench-{NAME}-left"), common.unique(f"bench-{NAME}-right")
        for t in (left, right):
            common.create_topic(bootstrap, t, PARTITIONS)
        load_s, expected = load_orders(bootstrap, left, right, args.records, args.seed)
        print(f"loaded input {left} + {right}: {target:,} records, {len(expected):,} matching orders, in {load_s:.1f} s",
              flush=True)
        sc = w.Scenario(NAME, "join", [left, right], target, min(target, w.WARMUP_RECORDS),
                        lambda out: verify_join(bootstrap, out, expected))
        suite = w.ThroughputSuite(args, sc, bootstrap, log_dir, ks_dir, pythons, ks)
        suite.run_all(systems)
    w.finish_info(info, suite.runs, t_start, load_s)
    if args.repeats > 0:
        cmd = f"python -m bench {NAME} --records {args.records} --repeats {args.repeats}"
        if args.systems != ",".join(SYSTEMS):
            cmd += f" --systems {args.systems}"
        if args.kstreamlet_ref:
            cmd += f" --kstreamlet-ref {args.kstreamlet_ref}"
        cmd += w.measure_flags(args)
        description = [
            (f"input: {n_orders:,} orders: `left` record (key `o00000000`.., murmur2 partitioner, {PARTITIONS} partitions, "
            f"{VALUE_SIZE}-byte value) at T0 + 2 i ms, `right` record at T0 + 2 i + d ms with d uniform in [-1000, 2000] ms "
            f"for {MATCH_SHARE:.0%} of the orders and +{NO_MATCH_DELAY_MS // 1000} s (no match) otherwise (seed {args.seed}); "
            f"each topic in timestamp order, then one `__flush__` record per partition of each topic; "
            f"{len(expected):,} matching orders; target = N + {2 * PARTITIONS} records processed"),
            (f"work (all): inner interval join on the key, right.ts ∈ [left.ts − {-LOWER_MS}, left.ts + {UPPER_MS}] ms inclusive, "
            "output value `left|right`; both topics consumed keyed by the record key (co-partitioned, no repartition); "
            "RocksDB state with a changelog"),
            (f"kstreamlet: `left.keyed().interval_join(right.keyed()).between({LOWER_MS}, {UPPER_MS}).apply(...)`; "
            f"Quix: `left.join_interval(right, backward_ms={-LOWER_MS}, forward_ms={UPPER_MS}, grace_ms={QUIX_GRACE_MS}, "
            "on_merge=...)` with `str` values, as Quix keeps join buffers as JSON (matches in both directions on arrival; Quix processes the two topics in timestamp order for joins); "
            "Kafka Streams: `left.join(right, JoinWindows...before(2 s).after(3 s))`"),
            (f"exactly-once, commit interval {w.COMMIT_INTERVAL} s, one process / one stream thread each; Python consumers "
            "`fetch.queue.backoff.ms=10` (kstreamlet's default; Quix via `consumer_extra_config`)"),
            ("verification: the output read back `read_committed` must hold exactly the matching orders, once each, "
            "with `left value|right value` (outputs of the `__flush__` key ignored); otherwise the run is WRONG and not counted"),
        ]
        md, summary = w.throughput_report("Join benchmark: interval join, exactly-once", cmd, description, systems,
                                          suite.runs, info, args.repeats)
        data = {"scenario": NAME, "machine": info, "systems": systems,
                "params": {"records": args.records, "orders": n_orders, "lower_ms": LOWER_MS, "upper_ms": UPPER_MS,
                           "match_share": MATCH_SHARE, "repeats": args.repeats, "partitions": PARTITIONS,
                           "seed": args.seed, "commit_interval": w.COMMIT_INTERVAL,
                           "consumer_config": w.CONSUMER_CONFIG, "target": target, "quix_grace_ms": QUIX_GRACE_MS},
                "summary": summary, "runs": suite.runs, "profile_run": suite.profile_run, "args": w.plain_args(args)}
        md_path, json_path = common.write_results(args.out, md, data)
        print()
        print(md)
        print(f"written {md_path} and {json_path}")
    failed = sum(1 for r in suite.runs if r["status"] != "OK")
    return 1 if failed else 0
