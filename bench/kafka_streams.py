"""Kafka Streams (Java) baseline worker: build, command line, run.

The worker is ``bench/kstreams`` (Maven project, one class, Kafka Streams |KS| + slf4j-simple
logging WARN to stderr) built into a runnable fat jar. It implements every scenario of
``bench/SCENARIOS.md`` with the plain DSL and default settings except the ones the contract
fixes (guarantee, commit interval, threads, replication factor 1, ``auto.offset.reset``):

- ``stateless`` / ``latency``: ``stream → mapValues(upper) → to`` (key and timestamp kept)
- ``wordcount``: ``flatMap(split, key = word) → repartition("words") → groupByKey →
  count("counts")`` (RocksDB + changelog, default record cache) ``→ to`` (word → int64 BE)
- ``window``: ``groupByKey → windowedBy(TimeWindows.ofSizeAndGrace(10 s, 1 s)) →
  aggregate(count, sum) → suppress(untilWindowCloses(unbounded))`` → ``sensor@start`` → 16 bytes
- ``join``: ``left.join(right, JoinWindows.ofTimeDifferenceAndGrace(…, 1 s).before(2 s).after(3 s))``
  (right.ts ∈ [left.ts − 2000, left.ts + 3000]), value ``left|right``, ``__flush__`` dropped

Timing as :class:`bench.common.Probe`: a counting ``peek`` right after every source (the
repartition topic's too) starts the clock at the first record and stops it at ``--target``;
the worker then waits for the next commit (``seconds_to_final_commit``), closes the client and
prints ``BENCH_RESULT {json}``. CPU is the JVM's process CPU time (all threads, JIT and GC
included). ``--mode restore`` (wordcount): timed from the first store partition's
``onRestoreStart`` to the last ``onRestoreEnd`` (a ``StateRestoreListener``). SIGTERM/SIGINT
stop the worker cleanly (close, result line, exit 0): ``latency`` runs end that way or at
``--timeout-s`` and then report ``ok: true`` with ``stopped_by``.

``python -m bench.kafka_streams --smoke`` runs every scenario once on a throw-away broker and
verifies the outputs.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common

PROJECT_DIR = common.BENCH_DIR / "kstreams"
CACHE_DIR = common.BENCH_CACHE
JAR_NAME = "kstreams-bench.jar"
SCENARIOS = ("stateless", "wordcount", "window", "join", "latency")
#: JVM options of every worker: the heap capped so that several can share a small machine;
#: everything else at the JVM's defaults (G1).
JVM_OPTIONS = ["-Xmx1g"]


# --- build ----------------------------------------------------------------------------------------

def source_hash() -> str:
    """sha256 over the Maven project's pom.xml and src/ (relative path + content), 16 hex digits."""
    h = hashlib.sha256()
    files = [PROJECT_DIR / "pom.xml", *sorted(p for p in (PROJECT_DIR / "src").rglob("*") if p.is_file())]
    for f in files:
        h.update(str(f.relative_to(PROJECT_DIR)).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"bench: the Kafka Streams worker needs `{name}` on PATH "
                           f"(Debian/Ubuntu: apt-get install {package})")
    return path


def ensure_jar(quiet: bool = False) -> Path:
    """The worker jar for the current sources: ``~/.cache/kstreamlet-bench/kstreams-<hash>.jar``.

    Built with Maven (``mvn -q -f bench/kstreams/pom.xml package -DskipTests``, build directory
    under the cache so the work tree stays clean) only when no jar for this hash of pom.xml +
    sources exists; concurrent callers wait on a file lock."""
    _tool("java", "openjdk-17-jdk-headless")
    jar = CACHE_DIR / f"kstreams-{source_hash()}.jar"
    if jar.exists():
        return jar
    mvn = _tool("mvn", "maven")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "kstreams-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jar.exists():
            return jar
        build_dir = CACHE_DIR / "kstreams-build"
        if not quiet:
            print(f"bench: building the Kafka Streams worker ({PROJECT_DIR / 'pom.xml'}) ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        proc = subprocess.run([mvn, "-q", "-B", "-f", str(PROJECT_DIR / "pom.xml"), "package", "-DskipTests",
                               f"-Dkstreams.build.dir={build_dir}"],
                              capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL, check=False)
        built = build_dir / JAR_NAME
        if proc.returncode != 0 or not built.exists():
            raise RuntimeError(f"bench: building the Kafka Streams worker failed (mvn rc={proc.returncode}):\n"
                               + "\n".join((proc.stdout + proc.stderr).splitlines()[-40:]))
        tmp = jar.with_suffix(".jar.tmp")
        shutil.copyfile(built, tmp)
        os.replace(tmp, jar)
        # Keep the newest few jars (a running worker keeps reading an unlinked jar).
        for old in sorted(CACHE_DIR.glob("kstreams-*.jar"), key=lambda f: f.stat().st_mtime, reverse=True)[3:]:
            old.unlink(missing_ok=True)
        if not quiet:
            print(f"bench: built {jar} in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    return jar


@functools.cache
def _versions(jar: str) -> dict[str, Any]:
    out = subprocess.run(["java", "-jar", jar, "--version"], capture_output=True, text=True, check=True,
                         timeout=60, stdin=subprocess.DEVNULL).stdout
    return json.loads(out.strip().splitlines()[-1])


def versions() -> dict[str, Any]:
    """``{"kafka_streams": "4.2.1", "java": "17.0.15", "java_vm": ..., "jar": ...}`` as the jar reports them."""
    jar = ensure_jar()
    return {**_versions(str(jar)), "jar": str(jar), "jvm_options": " ".join(JVM_OPTIONS)}


# --- command line and run -------------------------------------------------------------------------

def command(scenario: str, *, bootstrap: str, application_id: str, in_topic: str, out_topic: str,
            state_dir: str | Path, guarantee: str, commit_interval_ms: int, target: int, timeout_s: float,
            in_topic2: str | None = None, threads: int = 1, mode: str = "run", jar: Path | None = None,
            warmup_records: int = 0, cache_max_bytes: int | None = None) -> list[str]:
    """The worker's command line (builds the jar first if needed); see SCENARIOS.md for the CLI."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown Kafka Streams scenario {scenario!r} (one of {SCENARIOS})")
    if guarantee not in ("exactly_once", "at_least_once"):
        raise ValueError(f"guarantee must be exactly_once or at_least_once, not {guarantee!r}")
    if scenario == "join" and not in_topic2:
        raise ValueError("the join scenario needs in_topic2 (the right-hand topic)")
    jar = jar or ensure_jar()
    cmd = ["java", *JVM_OPTIONS, "-jar", str(jar), scenario, "--bootstrap", bootstrap,
           "--application-id", application_id, "--in-topic", in_topic]
    if in_topic2:
        cmd += ["--in-topic2", in_topic2]
    cmd += ["--out-topic", out_topic, "--state-dir", str(state_dir), "--guarantee", guarantee,
            "--commit-interval-ms", str(int(commit_interval_ms)), "--threads", str(threads),
            "--target", str(target), "--timeout-s", str(timeout_s), "--mode", mode]
    if warmup_records:
        cmd += ["--warmup-records", str(int(warmup_records))]  # the clock starts after that many records
    if cache_max_bytes is not None:
        cmd += ["--cache-max-bytes", str(int(cache_max_bytes))]  # statestore.cache.max.bytes; 0 = off
    return cmd


def run(scenario: str, *, log_path: Path, wall_timeout: float | None = None, **kwargs: Any) -> common.WorkerOutcome:
    """Run the worker (keyword arguments as :func:`command`), stderr to ``log_path``.

    The worker stops itself at ``timeout_s`` (printing ``ok: false``, or for ``latency`` its
    result); the subprocess is killed only past ``wall_timeout`` (default ``timeout_s + 90``)."""
    cmd = command(scenario, **kwargs)
    wall = wall_timeout if wall_timeout is not None else float(kwargs["timeout_s"]) + 90
    return common.run_command(cmd, wall, log_path)


# --- smoke test -------------------------------------------------------------------------------------

SMOKE_PARTITIONS = 6
T0 = 1_700_000_000_000
FLUSH_KEY = b"__flush__"


def _producer(bootstrap: str, partitioner: str) -> Any:
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                     "compression.type": "none", "partitioner": partitioner,
                     # idempotent: a retried batch never lands behind later ones (event-time order)
                     "enable.idempotence": True, "queue.buffering.max.messages": 500_000})


def _produce(p: Any, topic: str, value: bytes, key: bytes, ts: int, partition: int | None = None) -> None:
    kw: dict[str, Any] = {"timestamp": ts}
    if partition is not None:
        kw["partition"] = partition
    while True:
        try:
            p.produce(topic, value, key, **kw)
            return
        except BufferError:
            p.poll(0.05)


def _smoke_window_input(bootstrap: str, topic: str, records: int, seed: int) -> dict[bytes, tuple[int, int]]:
    """As SCENARIOS.md's window input (smoke only; bench/window.py has the official loader).
    Returns the expected output: ``b"<sensor>@<start>"`` -> (count, sum)."""
    rng = random.Random(seed)
    p = _producer(bootstrap, "murmur2")
    expected: dict[bytes, list[int]] = {}
    max_ts = 0
    for i in range(records):
        sensor = f"s{rng.randrange(1000):04d}"
        reading = rng.randint(-1_000_000, 1_000_000)
        ts = T0 + i - rng.randint(0, 500)
        max_ts = max(max_ts, ts)
        _produce(p, topic, struct.pack(">q", reading), sensor.encode(), ts)
        agg = expected.setdefault(f"{sensor}@{ts - ts % 10_000}".encode(), [0, 0])
        agg[0] += 1
        agg[1] += reading
        if i % 10_000 == 0:
            p.poll(0)
    for part in range(SMOKE_PARTITIONS):
        _produce(p, topic, struct.pack(">q", 0), FLUSH_KEY, max_ts + 60_000, part)
    if p.flush(60):
        raise RuntimeError("window input not acknowledged")
    return {k: (c, s) for k, (c, s) in expected.items()}


def _smoke_join_input(bootstrap: str, left: str, right: str, records: int, seed: int) -> dict[bytes, bytes]:
    """As SCENARIOS.md's join input (smoke only; bench/join.py has the official loader).
    ``records`` = left + right records. Returns the expected output: order id -> value."""
    rng = random.Random(seed)
    orders = records // 2
    p = _producer(bootstrap, "murmur2")
    rights: list[tuple[int, bytes, bytes]] = []
    expected: dict[bytes, bytes] = {}
    max_ts = 0
    for i in range(orders):
        key = f"o{i:08d}".encode()
        lts = T0 + 2 * i
        lv = f"L{i}".encode().ljust(100, b"x")
        d = rng.randint(-1000, 2000) if rng.random() < 0.9 else 10_000
        rv = f"R{i}".encode().ljust(100, b"x")
        _produce(p, left, lv, key, lts)
        rights.append((lts + d, key, rv))
        if -2000 <= d <= 3000:
            expected[key] = lv + b"|" + rv
        max_ts = max(max_ts, lts, lts + d)
        if i % 10_000 == 0:
            p.poll(0)
    rights.sort(key=lambda r: r[0])  # produced in timestamp order
    for n, (ts, key, rv) in enumerate(rights):
        _produce(p, right, rv, key, ts)
        if n % 10_000 == 0:
            p.poll(0)
    for topic in (left, right):
        for part in range(SMOKE_PARTITIONS):
            _produce(p, topic, b"flush", FLUSH_KEY, max_ts + 60_000, part)
    if p.flush(60):
        raise RuntimeError("join input not acknowledged")
    return expected


def read_all(bootstrap: str, topic: str, partitions: int = SMOKE_PARTITIONS, idle_timeout: float = 15.0) -> tuple[list[tuple[bytes, bytes]], bool]:
    """Every record of ``topic`` read ``read_committed`` to its end: ([(key, value)], complete)."""
    got = common.read_topic(bootstrap, topic, partitions, idle_timeout)
    return [(k or b"", v or b"") for k, v, _ in got.records], got.complete


def _check_exact(got: list[tuple[bytes, bytes]], complete: bool, expected: dict[bytes, Any],
                 decode: Any = lambda v: v, ignore: Any = lambda k: False) -> tuple[bool, str]:
    seen: dict[bytes, Any] = {}
    dup = unknown = wrong = 0
    for k, v in got:
        if ignore(k):
            continue
        if k in seen:
            dup += 1
        seen[k] = v
        if k not in expected:
            unknown += 1
        elif decode(v) != expected[k]:
            wrong += 1
    missing = sum(1 for k in expected if k not in seen)
    ok = complete and not (dup or unknown or wrong or missing)
    desc = f"{len(got)} output records, expected {len(expected)}: missing={missing} duplicates={dup} " \
           f"unknown={unknown} wrong={wrong}{'' if complete else ' (incomplete read)'}"
    return ok, desc


def smoke(records: int, keep_logs: bool = False, only: set[str] | None = None) -> int:
    from bench import stateful
    from kstreamlet.dev.kafka import kafka_broker

    t0 = time.monotonic()
    fresh = not (CACHE_DIR / f"kstreams-{source_hash()}.jar").exists()
    jar = ensure_jar()
    build_s = time.monotonic() - t0
    info = versions()
    print(f"jar {jar} ({'built' if fresh else 'cached'} in {build_s:.1f} s); Kafka Streams {info['kafka_streams']}, "
          f"Java {info['java']}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="kstreamlet-bench-kstreams-smoke-"))
    results: list[tuple[str, dict[str, Any], bool, str]] = []
    base: dict[str, Any] = {"guarantee": "exactly_once", "commit_interval_ms": 1000, "threads": 1, "jar": jar}

    def go(scenario: str, tag: str, target: int, in_topic: str, out_topic: str, **kw: Any) -> common.WorkerOutcome:
        app = kw.pop("application_id", None) or common.unique(f"bench-ks-{tag}")
        state = kw.pop("state_dir", None) or tempfile.mkdtemp(prefix=f"state-{tag}-", dir=work)
        opts = {**base, "timeout_s": 120, **kw}
        outcome = run(scenario, log_path=work / f"{tag}.log", bootstrap=bootstrap, application_id=app,
                      in_topic=in_topic, out_topic=out_topic, state_dir=state, target=target, **opts)
        res = outcome.result or {}
        if res.get("ok") and "processed" in res:
            what = (f"{res['processed']:,} processed  {res['rate']:,.0f} rec/s  {res['seconds']:.2f} s  "
                    f"cpu {res['cpu_us_per_record']:.1f} us/rec  box {res.get('machine_busy_pct') or 0:.0f}%  "
                    f"commits {res.get('commits')}  to final commit {res.get('seconds_to_final_commit') or 0:.2f} s")
        elif res.get("ok") and "records" in res:
            what = (f"{res['records']:,} changelog records restored  {res['rate']:,.0f} rec/s  {res['seconds']:.2f} s  "
                    f"cpu {res['cpu_us_per_record']:.1f} us/rec")
        else:
            what = json.dumps(res)
        print(f"  {tag:<18} rc={outcome.rc} wall {outcome.wall_seconds:5.1f} s  {what}", flush=True)
        if outcome.log_tail:
            print("    log tail:\n    " + outcome.log_tail.replace("\n", "\n    "), flush=True)
        return outcome

    try:
        with kafka_broker() as broker:
            bootstrap = broker.bootstrap_servers

            def topic(name: str) -> str:
                t = common.unique(f"bench-ks-{name}")
                common.create_topic(bootstrap, t, SMOKE_PARTITIONS)
                return t

            def want(name: str) -> bool:
                return not only or name in only

            if want("stateless"):  # EOS 100 ms and ALO 1 s
                src = topic("stateless-in")
                common.load_input(bootstrap, src, records, 100)
                for tag, g, ms in (("stateless-eos", "exactly_once", 100), ("stateless-alo", "at_least_once", 1000)):
                    out = topic(f"{tag}-out")
                    o = go("stateless", tag, records, src, out, guarantee=g, commit_interval_ms=ms)
                    v = common.verify_output(bootstrap, out, records, SMOKE_PARTITIONS,
                                             lambda b: b is not None and len(b) == 100 and b.isupper())
                    results.append((tag, o.result or {}, bool(o.result and o.result.get("ok")) and v.ok(records),
                                    v.describe(records)))

            if want("wordcount"):  # + restore; N/6 lines so that processed = N
                lines_n = records // 6
                src = topic("wc-in")
                stateful.load_lines(bootstrap, src, lines_n, 42)
                out = topic("wc-out")
                app = common.unique("bench-ks-wc")
                state = Path(tempfile.mkdtemp(prefix="state-wc-", dir=work))
                o = go("wordcount", "wordcount", lines_n * 6, src, out, application_id=app, state_dir=str(state))
                ver = stateful.verify_counts(bootstrap, out, stateful.true_counts(lines_n, 42))
                results.append(("wordcount", o.result or {}, bool(o.result and o.result.get("ok")) and ver["ok"],
                                ver["describe"]))
                shutil.rmtree(state, ignore_errors=True)
                state.mkdir()
                o = go("wordcount", "wordcount-restore", 0, src, out, application_id=app, state_dir=str(state),
                       mode="restore")
                r = o.result or {}
                results.append(("wordcount-restore", r, bool(r.get("ok")) and r.get("records", 0) > 0,
                                f"{r.get('records')} changelog records restored, {r.get('store_partitions')} store "
                                f"partitions" if r.get("ok") else str(r.get("error"))))

            if want("window"):
                src = topic("window-in")
                expected_w = _smoke_window_input(bootstrap, src, records, 42)
                out = topic("window-out")
                o = go("window", "window", records + SMOKE_PARTITIONS, src, out)
                got, complete = read_all(bootstrap, out)
                ok, desc = _check_exact(got, complete, expected_w, decode=lambda v: struct.unpack(">qq", v),
                                        ignore=lambda k: k.startswith(FLUSH_KEY + b"@"))
                results.append(("window", o.result or {}, bool(o.result and o.result.get("ok")) and ok, desc))

            if want("join"):
                left, right = topic("join-left"), topic("join-right")
                expected_j = _smoke_join_input(bootstrap, left, right, records, 42)
                out = topic("join-out")
                o = go("join", "join", (records // 2) * 2 + 2 * SMOKE_PARTITIONS, left, out, in_topic2=right)
                got, complete = read_all(bootstrap, out)
                ok, desc = _check_exact(got, complete, expected_j)
                results.append(("join", o.result or {}, bool(o.result and o.result.get("ok")) and ok, desc))

            if want("latency"):  # the stateless work until the worker's own timeout
                src, out = topic("latency-in"), topic("latency-out")
                common.load_input(bootstrap, src, 2_000, 100)
                o = go("latency", "latency", 0, src, out, commit_interval_ms=100, timeout_s=25)
                r = o.result or {}
                v = common.verify_output(bootstrap, out, 2_000, SMOKE_PARTITIONS,
                                         lambda b: b is not None and len(b) == 100 and b.isupper())
                results.append(("latency", r, bool(r.get("ok")) and r.get("stopped_by") == "timeout" and v.ok(2_000),
                                v.describe(2_000)))
    finally:
        if not keep_logs:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs in {work}")
    print()
    print(common.md_table(["scenario", "processed / restored", "records/s", "seconds", "CPU µs/rec", "verified", "output"],
                          [[name, f"{r.get('processed', r.get('records', 0)):,}", common.fmt_rate(r.get("rate")),
                            f"{r['seconds']:.2f}" if r.get("seconds") else "—",
                            f"{r['cpu_us_per_record']:.1f}" if r.get("cpu_us_per_record") else "—",
                            "yes" if ok else "**NO**", desc] for name, r, ok, desc in results]))
    return 0 if all(ok for _, _, ok, _ in results) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kafka_streams", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="run every scenario once on a throw-away broker and verify")
    p.add_argument("--records", type=int, default=30_000, help="input records per smoke scenario (default 30,000)")
    p.add_argument("--only", help=f"comma-separated subset of {list(SCENARIOS)} for --smoke")
    p.add_argument("--keep-logs", action="store_true", help="keep the smoke run's worker logs")
    p.add_argument("--build", action="store_true", help="only build (or find) the jar and print its versions")
    a = p.parse_args(argv)
    if a.smoke:
        return smoke(a.records, a.keep_logs, set(a.only.split(",")) if a.only else None)
    print(json.dumps(versions(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
