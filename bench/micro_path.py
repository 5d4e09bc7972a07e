"""``python -m bench.micro_path --ref <git revision>``: the member's per-record Python path, broker-free,
for the working tree and an earlier revision, interleaved in fresh processes.

What is timed (CPU time of the process, ``time.process_time``): ``Member._process`` (and, for the
event-time scenarios, the loop's ``_tick``) over batches of 1,000 in-memory messages, with a
checkpoint commit every 20 batches, against fake clients whose ``produce`` only counts. Scenarios
(``--scenario``): ``stateless`` — ``map(bytes.upper).to(out)`` (6 partitions, exactly-once); ``chain`` — the same with
five stateless operators (map, filter, flat_map, peek, map) before the sink;
``interval_join`` — two keyed inputs joined ``between(-2000, 3000)`` (bench/join.py's pipeline), 1,000
keys, RocksDB state; ``window`` — a tumbling 10 s event-time count/sum per key (bench/window.py's
shape), 1,000 keys, RocksDB state; ``wordcount`` — a running ``count()`` per key (the stateful
benchmark's counting task), 1,000 keys per partition, RocksDB state; ``--compare-cache`` runs it (or any
scenario) with the record cache off and on instead of against ``--ref``, ``--compare-fusion`` with operator
fusion off and on. librdkafka is not involved, so machine noise from its threads and the
broker is out; what remains is kstreamlet's own cost per record (route, task, nodes, record
collector) and per commit. For refactorings that must not cost speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench import common

BATCHES = 300
BATCH = 1000
COMMIT_EVERY = 20


class Msg:
    __slots__ = ("_p", "_o", "_v", "_t", "_k", "_ts")

    def __init__(self, p: int, o: int, v: bytes, topic: str = "in", key: bytes = b"k", ts: int = 1_000) -> None:
        self._p, self._o, self._v, self._t, self._k, self._ts = p, o, v, topic, key, ts

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def headers(self) -> None:
        return None


class FakeProducer:
    def __init__(self, *a: Any, **kw: Any) -> None:
        self.n = 0

    def produce(self, *a: Any, **kw: Any) -> None:
        self.n += 1

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def init_transactions(self, *a: Any) -> None:
        pass

    def begin_transaction(self) -> None:
        pass

    def send_offsets_to_transaction(self, *a: Any) -> None:
        pass

    def commit_transaction(self, *a: Any) -> None:
        pass

    def abort_transaction(self, *a: Any) -> None:
        pass


class FakeConsumer:
    def __init__(self, *a: Any, **kw: Any) -> None:
        self.cb: dict[str, Any] = {}

    def subscribe(self, topics: Any, on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None) -> None:
        self.cb = {"assign": on_assign}

    def incremental_assign(self, tps: Any) -> None:
        pass

    def consumer_group_metadata(self) -> str:
        return "g"

    def committed(self, tps: Any, timeout: float = 0) -> list[Any]:
        return list(tps)

    def get_watermark_offsets(self, tp: Any, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
        return 0, 0  # empty changelogs: nothing to restore

    def pause(self, tps: Any) -> None:
        pass

    def close(self) -> None:
        pass


class FakeClients:
    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        return FakeConsumer()

    def producer(self, config: dict[str, Any]) -> FakeProducer:
        return FakeProducer()

    def admin(self, config: dict[str, Any]) -> Any:
        raise AssertionError("no admin calls")


def _app(scenario: str, state_dir: str) -> Any:
    from kstreamlet import App, serdes

    app = App(application_id="micro", bootstrap_servers="127.0.0.1:1", processing_guarantee="exactly_once",
              instance_id="m", commit_interval=0.1, state_dir=state_dir, log_level="warning")
    if scenario == "stateless":
        app.stream("in").map(lambda v: v.upper()).to("out")
    elif scenario == "chain":
        # Five stateless operators before the sink: what operator fusion (topology/fusion.py) saves.
        (app.stream("in").map(lambda v: v.upper()).filter(lambda v: len(v) > 1).flat_map(lambda v: (v,))
            .peek(lambda k, v: None).map(lambda v: v[:50]).to("out"))
    elif scenario == "interval_join":
        left = app.stream("in", key_serde=serdes.BYTES, value_serde=serdes.BYTES)
        right = app.stream("in2", key_serde=serdes.BYTES, value_serde=serdes.BYTES)
        (left.keyed().interval_join(right.keyed()).between(-2000, 3000)
            .apply(lambda lv, rv: lv + b"|" + rv, output_serde=serdes.BYTES, name="orders-shipments")
            .to("out", key_serde=serdes.BYTES, value_serde=serdes.BYTES))
    elif scenario == "window":
        from kstreamlet.eventtime import WatermarkStrategy
        from kstreamlet.windowing import TumblingEventTimeWindows

        (app.stream("in", key_serde=serdes.BYTES, value_serde=serdes.BYTES,
                    watermarks=WatermarkStrategy.for_bounded_out_of_orderness(1000))
            .keyed()
            .window(TumblingEventTimeWindows.of(10_000))
            .reduce(lambda a, b: a, serde=serdes.BYTES, name="sensor-windows")
            .to("out", key_serde=serdes.BYTES, value_serde=serdes.BYTES))
    elif scenario == "wordcount":
        # The stateful benchmark's counting half (its input already keyed by word, as after the
        # repartition): a running count per key on RocksDB, the record cache as the settings say
        # (--compare-cache runs it off and on).
        (app.stream("in", key_serde=serdes.BYTES, value_serde=serdes.BYTES)
            .keyed()
            .count(name="counts")
            .to("out", key_serde=serdes.BYTES, value_serde=serdes.INT64))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    return app


def _batches(scenario: str) -> list[list[Msg]]:
    value = b"x" * 100
    per = BATCH // 6  # a fetched batch holds runs of records of one partition, as librdkafka returns them
    if scenario in ("stateless", "chain"):
        return [[Msg(p, b * per + i, value) for p in range(6) for i in range(per)] for b in range(BATCHES)]
    # Event time advances 10 ms per record of a partition (about one 10 s window per 1,000 records of a
    # partition); keys cycle through 1,000 per partition. The join's right side trails by 1 s.
    out = []
    for b in range(BATCHES):
        batch = []
        for p in range(6):
            topic = "in2" if scenario == "interval_join" and b % 2 else "in"
            for i in range(per):
                n = b * per + i
                batch.append(Msg(p, n, value, topic, b"k%d-%d" % (p, n % 1000),
                                 1_000_000 + n * 10 - (1000 if topic == "in2" else 0)))
        out.append(batch)
    return out


def measure(scenario: str = "stateless", batches_n: int | None = None) -> dict[str, Any]:
    """In this process: build a member on fakes (either API generation) and time the path."""
    import inspect
    import tempfile

    from confluent_kafka import TopicPartition

    import kstreamlet.runtime.member as member_mod
    from kstreamlet.logging import configure_logging

    configure_logging("warning")  # as the runner does: a debug line per late record is not the path measured
    app = _app(scenario, tempfile.mkdtemp(prefix="micro-state-"))
    inputs = ["in", "in2"] if scenario == "interval_join" else ["in"]
    Member = member_mod.Member
    if "clients" in inspect.signature(Member.__init__).parameters:
        m = Member(app, "m", install_signal_handlers=False, clients=FakeClients())
        for t in inputs + ["out"]:
            m.topics.partition_counts[t] = 6
        m.topics.ensure_changelog = lambda topic, partitions: False  # type: ignore[method-assign]
    else:  # a revision whose member builds confluent-kafka clients itself
        if scenario not in ("stateless", "chain"):
            raise SystemExit("stateful scenarios need a revision with injectable clients")
        member_mod.Producer = FakeProducer  # type: ignore[attr-defined]
        member_mod.Consumer = FakeConsumer  # type: ignore[attr-defined]
        m = Member(app, "m", install_signal_handlers=False)
        m.partition_counts = {"in": 6, "out": 6}
    m._create_clients()
    consumer = m.consumer
    on_assign = consumer.cb["assign"]  # type: ignore[union-attr]
    on_assign(consumer, [TopicPartition(t, p) for t in inputs for p in range(6)])
    ticking = scenario not in ("stateless", "chain")
    global BATCHES
    if batches_n:
        BATCHES = batches_n
    batches = _batches(scenario)
    for b in batches[:20]:  # warm-up
        m._process(b)
        if ticking:
            m._tick(m.ckpt)
    m._commit()
    produced0 = m.collector.producer.n  # type: ignore[union-attr]
    t0 = time.process_time()
    for i, b in enumerate(batches):
        m._process(b)
        if ticking:
            m._tick(m.ckpt)
        if i % COMMIT_EVERY == COMMIT_EVERY - 1:
            m._commit()
    m._commit()
    cpu = time.process_time() - t0
    n = BATCHES * BATCH
    produced = m.collector.producer.n - produced0  # type: ignore[union-attr]
    return {"scenario": scenario, "records": n, "produced": produced, "cpu_seconds": cpu,
            "cpu_us_per_record": cpu / n * 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.micro_path", description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", help="git revision to compare the working tree with")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--scenario", choices=["stateless", "chain", "interval_join", "window", "wordcount"],
                   default="stateless")
    p.add_argument("--compare-cache", action="store_true",
                   help="run the working tree with the record cache off (record_cache_max_bytes=0) and on "
                        "(10 MiB) instead of against --ref")
    p.add_argument("--compare-fusion", action="store_true",
                   help="run the working tree with operator fusion off (fuse_operators=false) and on instead of "
                        "against --ref")
    p.add_argument("--batches", type=int, default=BATCHES, help="batches of 1,000 records timed (default %(default)s)")
    p.add_argument("--_measure", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._measure:
        print(json.dumps(measure(a.scenario, a.batches)))
        return 0
    trees = {"new": common.kstreamlet_root(None)[0]}
    envs = {"new": common.worker_env()}
    if a.compare_cache:
        if a.ref:
            raise SystemExit("--compare-cache compares the working tree with itself: no --ref")
        trees = {"cache_off": trees["new"], "cache_on": trees["new"]}
        envs = {"cache_off": {**envs["new"], "KSTREAMLET_RECORD_CACHE_MAX_BYTES": "0"},
                "cache_on": {**envs["new"], "KSTREAMLET_RECORD_CACHE_MAX_BYTES": str(10 * 1024 * 1024)}}
    elif a.compare_fusion:
        if a.ref:
            raise SystemExit("--compare-fusion compares the working tree with itself: no --ref")
        trees = {"unfused": trees["new"], "fused": trees["new"]}
        envs = {"unfused": {**envs["new"], "KSTREAMLET_FUSE_OPERATORS": "false"},
                "fused": {**envs["new"], "KSTREAMLET_FUSE_OPERATORS": "true"}}
    elif a.ref:
        trees["ref"] = common.kstreamlet_root(a.ref)[0]
        envs["ref"] = envs["new"]
    res: dict[str, list[float]] = {k: [] for k in trees}
    for rep in range(a.repeats):
        for k in (list(trees) if rep % 2 == 0 else list(reversed(list(trees)))):
            out = subprocess.run([sys.executable, "-m", "bench.micro_path", "--_measure", "--scenario", a.scenario,
                                  "--batches", str(a.batches)],
                                 cwd=trees[k],
                                 env=envs[k], capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            r = json.loads(out.stdout.strip().splitlines()[-1])
            res[k].append(r["cpu_us_per_record"])
            print(f"  {k} run {rep + 1}: {r['cpu_us_per_record']:.3f} µs/record, {r.get('produced', '?')} produced",
                  flush=True)
    print()
    for k, vals in res.items():
        print(f"{k}: median {statistics.median(vals):.3f} µs/record (min {min(vals):.3f}, runs {len(vals)})")
    if "ref" in res:
        print(f"new ÷ ref (median): {statistics.median(res['new']) / statistics.median(res['ref']):.3f}; "
              f"(min): {min(res['new']) / min(res['ref']):.3f}")
    if "fused" in res:
        print(f"fused ÷ unfused (median): {statistics.median(res['fused']) / statistics.median(res['unfused']):.3f}; "
              f"(min): {min(res['fused']) / min(res['unfused']):.3f}")
    if "cache_on" in res:
        print(f"cache_on ÷ cache_off (median): "
              f"{statistics.median(res['cache_on']) / statistics.median(res['cache_off']):.3f}; "
              f"(min): {min(res['cache_on']) / min(res['cache_off']):.3f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KSTREAMLET_LOG_LEVEL", "warning")
    raise SystemExit(main())
