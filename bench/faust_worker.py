"""Faust (faust-streaming) as a benchmarked system: its virtualenv and its worker code.

Faust needs aiokafka and its own dependency set, so it runs from its own virtualenv
(``~/.cache/kstreamlet-bench/faust-venv``, created on first use with
``pip install faust-streaming[rocksdict]==FAUST_VERSION``), never in the project's
environment. The parent side (:func:`faust_python`, :func:`faust_versions`) imports no
Faust; the worker side runs inside the scenario worker (``<faust-venv python> -m bench
_worker <scenario> --system faust ...``), so it speaks the same ``BENCH_RESULT`` protocol.

Both Faust apps run one ``faust.Worker`` in the process: web server disabled, data dir
under the run's temp dir, commit on a timer only (``broker_commit_interval`` = the
scenario's commit interval, ``broker_commit_every`` out of reach), ``processing_guarantee``
as the setting says. Timing: counted in the agent loop, from the first record an agent
receives to the target count. Faust is much slower than the other systems, so its runs are
bounded: ``--timeout`` seconds after the first record the worker stops (gracefully: the
last commit makes what it processed visible) and reports records/s over what it had
processed by then, with ``partial: true``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

from bench import common

FAUST_VERSION = "0.15.3"
#: the extra pulls in rocksdict, Faust's RocksDB binding (python-rocksdb does not build any more)
FAUST_REQUIREMENTS = [f"faust-streaming[rocksdict]=={FAUST_VERSION}"]
DEFAULT_FAUST_VENV = common.BENCH_CACHE / "faust-venv"
DEFAULT_FAUST_TIMEOUT = 120.0
#: Commit on the timer only, as every other system does (Faust's default also commits
#: every 10,000 acked messages).
COMMIT_EVERY_NEVER = 2**31 - 1


# --- parent side --------------------------------------------------------------------------------

def faust_python(override: str | None = None) -> str:
    if override:
        return override
    return common.ensure_venv(DEFAULT_FAUST_VENV, FAUST_REQUIREMENTS, "aiokafka, rocksdict")


def faust_versions(py: str) -> dict[str, Any]:
    code = ("import json, faust, aiokafka\n"
            "try:\n import rocksdict; r = getattr(rocksdict, '__version__', 'installed')\n"
            "except ImportError:\n r = None\n"
            "print(json.dumps({'faust_streaming': faust.__version__, 'aiokafka': aiokafka.__version__, 'rocksdict': r}))")
    return common.venv_versions(py, code, "faust-streaming")


def add_timeout_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--faust-timeout", type=float, default=DEFAULT_FAUST_TIMEOUT,
                   help=f"stop each Faust run this many seconds after its first record and report the rate over "
                        f"what it processed by then, marked 'partial (timed)' (default {DEFAULT_FAUST_TIMEOUT:.0f})")
    p.add_argument("--faust-python", default=None,
                   help=f"python of a virtualenv with faust-streaming (default {DEFAULT_FAUST_VENV}/bin/python, "
                        "created if missing)")


def repartition_topic(group: str) -> str:
    """The word count's repartition topic. The parent creates it before the worker starts:
    Faust declares it at start-up, but its first group join can come before the topic's
    metadata, and then the topic is left unassigned ("Ignoring missing topic") for the run."""
    return f"{group}-words-repartition"


# --- worker side (inside the faust venv) ----------------------------------------------------------

class _Run:
    """What the agents and the stopping logic share."""

    def __init__(self, probe: common.Probe, target: int, timeout: float) -> None:
        self.probe = probe
        self.target = target
        self.timeout = timeout
        self.n = 0
        self.worker: Any = None
        self.stopping = False
        self.partial = False
        self.restore: dict[str, float] = {}
        self.restored = 0
        self.shutdown_error: str | None = None

    def first(self) -> None:
        self.probe.first()
        asyncio.get_running_loop().call_later(self.timeout, self._on_timeout)

    def _on_timeout(self) -> None:
        if self.probe.t_last is None:
            self.partial = True
            self.probe.last(self.n)
            self.stop()

    def count(self, k: int = 1) -> None:
        """``k`` more records processed (called in the agent loops)."""
        if self.n == 0:
            self.first()
        self.n += k
        if self.n >= self.target and self.probe.t_last is None:
            self.probe.last(self.n)
            self.stop()

    def stop(self) -> None:
        """Stop the worker from a task of its own (an agent must not wait for its own cancellation).
        Stopping commits what was processed (``stream_wait_empty``: waits for every acked event)."""
        if not self.stopping:
            self.stopping = True
            asyncio.ensure_future(self.worker.stop())


def _app(a: argparse.Namespace, run: _Run, *, guarantee: str, commit_interval: float, **extra: Any) -> Any:
    import faust
    from faust.sensors import Sensor

    class CommitSensor(Sensor):
        def on_commit_completed(self, consumer: Any, state: Any) -> None:
            if run.probe.t_first is not None:
                run.probe.committed()

    app = faust.App(
        a.group,
        broker=f"kafka://{a.bootstrap}",
        processing_guarantee=guarantee,
        broker_commit_interval=commit_interval,
        broker_commit_every=COMMIT_EVERY_NEVER,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(Path(a.state_dir) / "faust-data"),
        topic_replication_factor=1,
        topic_partitions=6,
        # (table_standby_replicas stays at its default, 1: with 0 and no table, Faust 0.15.3 joins
        # with the round-robin assignor, and its exactly-once transaction manager then fails on
        # the first assignment: KeyError in PartitionAssignor.group_for_topic. One worker has
        # no other member to keep standbys, so none are assigned.)
        producer_linger=0.005,  # as the raw loop's linger.ms=5
        **extra,
    )
    app.sensors.add(CommitSensor())
    return app


def _run_worker(app: Any, run: _Run, a: argparse.Namespace) -> None:
    import faust

    worker = faust.Worker(app, loglevel=os.environ.get("BENCH_FAUST_LOGLEVEL", "WARNING"), quiet=True, redirect_stdouts=False, stdout=sys.stderr,
                          workdir=a.state_dir, override_logging=True)
    # No terminal progress spinner: it sets the root logger to DEBUG (to spin on every record),
    # which makes aiokafka and Faust build a debug log record for every message sent.
    worker.spinner = None
    run.worker = worker
    # A hard stop if the run never gets going (no first record): the timed stop starts at the first one.
    loop = worker.loop
    loop.call_later(a.timeout + 60, lambda: run.probe.t_first is None and run.restore.get("end") is None and run.stop())
    try:
        worker.execute_from_commandline()
    except SystemExit as e:
        if e.code not in (0, None):
            _after_stop(run, RuntimeError(f"faust worker exited with {e.code}"))
    except Exception as e:  # noqa: BLE001 -- the crash reason, re-raised by mode's Worker at shutdown
        _after_stop(run, e)


def _after_stop(run: _Run, exc: BaseException) -> None:
    """A crash while stopping, after the measurement ended, is noted, not fatal: Faust 0.15.3 under
    exactly-once can crash at shutdown when its commit timer fires after the final commit
    (``IllegalOperation: Not in the middle of a transaction``). The parent's verification of
    the committed output decides whether the run is correct."""
    if run.stopping and (run.probe.t_last is not None or "end" in run.restore):
        run.shutdown_error = repr(exc)
        print(f"faust worker: crash while stopping (after the measurement): {exc!r}", file=sys.stderr, flush=True)
        return
    raise exc


def _facts(facts: dict[str, Any], run: _Run, store: str | None = None) -> None:
    import aiokafka
    import faust

    facts.update(faust_streaming=faust.__version__, aiokafka=aiokafka.__version__, partial=run.partial,
                 processed_total=run.n)
    if run.shutdown_error:
        facts["shutdown_error"] = run.shutdown_error
    if store:
        facts["store"] = store


def stateless(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any]) -> None:
    """consume -> ``value.upper()`` -> produce, key and timestamp kept."""
    run = _Run(probe, a.target, a.timeout)
    app = _app(a, run, guarantee=a.guarantee, commit_interval=a.commit_interval)
    src = app.topic(a.in_topic, key_serializer="raw", value_serializer="raw")
    out = app.topic(a.out_topic, key_serializer="raw", value_serializer="raw")

    @app.agent(src, name="upper")
    async def upper(stream: Any) -> None:
        send = out.send
        count = run.count
        async for event in stream.events():
            await send(key=event.key, value=event.value.upper(), timestamp=event.message.timestamp)
            count()

    _run_worker(app, run, a)
    _facts(facts, run)


def _rocksdb_available() -> bool:
    try:
        import rocksdict  # noqa: F401
    except ImportError:
        return False
    return True


def _wordcount_app(a: argparse.Namespace, run: _Run, facts: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    store = "rocksdb://" if _rocksdb_available() else "memory://"
    facts["store"] = store
    app = _app(a, run, guarantee="exactly_once", commit_interval=a.commit_interval, store=store)
    lines_t = app.topic(a.in_topic, key_serializer="raw", value_serializer="raw")
    # The repartition topic (Faust's group_by is one record in, one out; a line has 5 words,
    # so the split agent sends each word keyed by itself, as group_by would).
    words_t = app.topic(repartition_topic(a.group), key_serializer="raw", value_serializer="raw",
                        partitions=6, internal=True)
    out_t = app.topic(a.out_topic, key_serializer="raw", value_serializer="raw")
    counts = app.Table("counts", default=int, partitions=6, key_type=str, value_type=int)
    return app, lines_t, words_t, (out_t, counts)


def wordcount(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any]) -> None:
    """split lines -> repartition by word -> count in a Table (changelog) -> (word, int64 count)."""
    run = _Run(probe, a.target, a.timeout)
    app, lines_t, words_t, (out_t, counts) = _wordcount_app(a, run, facts)

    @app.agent(lines_t, name="split")
    async def split(stream: Any) -> None:
        send = words_t.send
        count = run.count
        async for line in stream:
            for w in line.split():
                await send(key=w, value=w)
            count()

    @app.agent(words_t, name="count")
    async def count_words(stream: Any) -> None:
        send = out_t.send
        count = run.count
        pack = struct.Struct(">q").pack
        async for w in stream:
            word = w.decode()
            n = counts[word] + 1
            counts[word] = n
            await send(key=w, value=pack(n))
            count()

    _run_worker(app, run, a)
    _facts(facts, run)


def wordcount_restore(a: argparse.Namespace, facts: dict[str, Any]) -> dict[str, Any]:
    """Same app id, wiped data dir: timed from the recovery's start (partitions assigned) to
    "all tables recovered"; records = changelog events applied."""
    from faust.tables.base import Collection
    from faust.tables.recovery import Recovery

    run = _Run(common.Probe(0), 1 << 62, a.timeout)
    app, lines_t, words_t, _ = _wordcount_app(a, run, facts)
    t = run.restore

    orig_rebalance = Recovery.on_rebalance
    orig_done = Recovery.on_recovery_completed
    orig_event = Collection.on_changelog_event
    orig_batch = Collection.apply_changelog_batch

    async def on_rebalance(self: Any, assigned: Any, *args: Any, **kwargs: Any) -> Any:
        if assigned and "start" not in t:
            t["start"] = time.monotonic()
            t["cpu_start"] = common.cpu_seconds()
        return await orig_rebalance(self, assigned, *args, **kwargs)

    async def on_recovery_completed(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "start" in t and "end" not in t:
            t["end"] = time.monotonic()
            t["cpu_end"] = common.cpu_seconds()
        r = await orig_done(self, *args, **kwargs)
        run.stop()
        return r

    async def on_changelog_event(self: Any, event: Any) -> Any:
        run.restored += 1
        return await orig_event(self, event)

    def apply_changelog_batch(self: Any, batch: Any) -> Any:
        # Recovery applies the changelog in batches (faust/tables/recovery.py), not per event.
        batch = list(batch)
        run.restored += len(batch)
        return orig_batch(self, batch)

    Recovery.on_rebalance = on_rebalance  # type: ignore[method-assign]
    Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]
    Collection.on_changelog_event = on_changelog_event  # type: ignore[method-assign]
    Collection.apply_changelog_batch = apply_changelog_batch  # type: ignore[method-assign]

    @app.agent(lines_t, name="split")
    async def split(stream: Any) -> None:
        async for _ in stream:
            pass  # the input is all committed: nothing arrives

    @app.agent(words_t, name="count")
    async def count_words(stream: Any) -> None:
        async for _ in stream:
            pass

    _run_worker(app, run, a)
    _facts(facts, run)
    if "start" not in t or "end" not in t:
        return {"ok": False, "error": "restore did not finish", "records": run.restored, **facts}
    if not run.restored:
        return {"ok": False, "error": "nothing was restored", "records": 0, **facts}
    secs = max(t["end"] - t["start"], 1e-9)
    cpu = t.get("cpu_end", 0.0) - t.get("cpu_start", 0.0)
    return {"ok": True, "records": run.restored, "seconds": secs, "rate": run.restored / secs, "cpu_seconds": cpu,
            "cpu_us_per_record": cpu / run.restored * 1e6, **facts}
