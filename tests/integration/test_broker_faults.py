"""Broker and coordinator faults while exactly-once members keep running.

Each scenario runs members as real processes against a broker (or 3-node cluster) the test
owns, injects the fault while input flows, and counts every committed output with a
``read_committed`` reader: nothing lost, nothing duplicated, and the members recover by
themselves (none exits; a SIGTERM at the end still exits 0). The stateless app checks each
record once; ``wordcount`` checks that every word's committed counts are exactly 1..N.
Printed per scenario: records in, lost, duplicated, seconds from the fault's end to the first
new output.
"""

from __future__ import annotations

import collections
import random
import struct
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, ClassVar

import pytest
from confluent_kafka.admin import AdminClient

from kstreamlet.dev.kafka import free_port
from kstreamlet.runtime.topics import create_topics
from tests.integration.members import Feeder, Members, OutputWatch, hanging_transactions, multiset_diff

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@dataclass
class Run:
    """One app on a broker the test owns: topics, members, input, output watch."""

    bootstrap: str
    tmp_path: object
    app: str = "stateless"
    members_n: int = 3
    partitions: int = 6
    n: int = 60_000
    rate: float = 3_000
    extra_env: dict[str, str] = field(default_factory=dict)

    #: Every Run of the current test (stopped by the autouse fixture below).
    started: ClassVar[list["Run"]] = []

    def __post_init__(self) -> None:
        Run.started.append(self)
        uid = uuid.uuid4().hex[:8]
        self.inp, self.out, self.app_id = f"in-{uid}", f"out-{uid}", f"faults-{uid}"
        create_topics(AdminClient({"bootstrap.servers": self.bootstrap}), {self.inp: self.partitions, self.out: self.partitions})
        env = {"IN_TOPIC": self.inp, "OUT_TOPIC": self.out, "KSTREAMLET_APPLICATION_ID": self.app_id,
               "KSTREAMLET_BOOTSTRAP_SERVERS": self.bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2",
               "KSTREAMLET_PROCESSING_GUARANTEE": "exactly_once", **self.extra_env}
        spec = "tests.apps.stateless:app" if self.app == "stateless" else "services.wordcount:app"
        self.members = Members(spec, env, self.tmp_path)  # type: ignore[arg-type]
        if self.app == "stateless":
            self.inputs = [str(i) for i in range(self.n)]
        else:
            rnd = random.Random(7)
            vocab = [f"w{i}" for i in range(200)]
            self.inputs = [" ".join(rnd.choice(vocab) for _ in range(3)) for _ in range(self.n)]
        self.watch = OutputWatch(self.bootstrap, self.out, self.partitions)
        self.names = [f"m{i + 1}" for i in range(self.members_n)]

    def start(self, http_ports: dict[str, int] | None = None) -> None:
        for name in self.names:
            env = {"KSTREAMLET_STATE_DIR": str(self.tmp_path) + f"/state-{name}"}  # type: ignore[operator]
            if http_ports:
                env["KSTREAMLET_HTTP_PORT"] = str(http_ports[name])
            self.members.start(name, env)
        deadline = time.monotonic() + 90
        while not all(self.members.events(n, "partitions assigned") for n in self.names[:1]):
            assert time.monotonic() < deadline, f"members got no partitions:\n{self.members.log_tail()}"
            time.sleep(0.2)
        self.watch.start()
        self.feeder = Feeder(self.bootstrap, self.inp, self.inputs, rate=self.rate)
        self.feeder.start()

    def wait_for_progress(self, timeout: float = 90) -> None:
        """Until outputs flow and a quarter of the input is sent: the fault then hits a running pipeline."""
        self.wait_outputs(200, timeout)
        deadline = time.monotonic() + timeout
        while self.feeder.sent < self.n // 4:
            assert time.monotonic() < deadline, f"input stalled at {self.feeder.sent}"
            time.sleep(0.1)

    def wait_outputs(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.watch.records) < count:
            assert time.monotonic() < deadline, f"fewer than {count} outputs in {timeout}s:\n{self.members.log_tail()}"
            time.sleep(0.1)

    def finish(self, fault_end: float, label: str, timeout: float = 240,
               ready_ports: dict[str, int] | None = None) -> None:
        """Wait for all input, check exactly-once, stop the members with SIGTERM (exit 0).

        With ``ready_ports``, first wait (up to 90 s after the outputs are complete) until every
        member answers ``/readyz`` 200 again; ``self.ready_after`` holds seconds from the fault's
        end to each member's first 200 (None: never)."""
        self.fault_started = getattr(self, "fault_started", fault_end)
        self.feeder.join(timeout)
        assert self.feeder.sent == self.n, f"the input producer delivered {self.feeder.sent} of {self.n}"
        crashed = {n: p.poll() for n, p in self.members.procs.items() if p.poll() is not None}
        expected = self._expected()
        self.watch.wait_quiet(len(expected), timeout)
        seen = self.watch.values()
        self.watch.stop()
        recovery = self.watch.first_after(fault_end)
        stall = self.watch.longest_stall_after(self.fault_started)
        self.ready_after: dict[str, float | None] = {}
        if ready_ports:
            self.ready_after = _wait_ready(ready_ports, fault_end, 90)
        self.stopping_at = time.monotonic()
        codes = self.members.stop_all()
        missing, extra = self._diff(expected, seen)
        print(f"\n[{label}] records in {self.n}, outputs {len(seen)} (expected {len(expected)}), lost {missing}, "
              f"duplicated {extra}, fault end -> first new output {recovery} s, longest output stall from the fault's "
              f"start {stall} s" + (f", ready again after {self.ready_after}" if ready_ports else ""))
        assert not crashed, f"members exited during the run (they must recover by themselves): {crashed}\n" \
                            f"{self.members.log_tail()}"
        if missing or extra:
            hanging = hanging_transactions(self.bootstrap, [self.out, self.app_id])
            if hanging:
                # Not a kstreamlet outcome: the broker left transactions with no marker, so their
                # records (and every later one of those partitions) stay invisible to read_committed
                # readers and to restores, whatever the client does. Reported, not passed.
                pytest.skip(f"[{label}] the broker left hanging transactions (lost {missing}, duplicated {extra} "
                            f"follow from them): {hanging}")
        assert missing == 0 and extra == 0, (f"expected every output exactly once: lost {missing}, duplicated {extra}\n"
                                             f"{self.members.log_tail()}")
        assert all(c == 0 for c in codes.values()), f"SIGTERM after recovery must exit 0, got {codes}\n" \
                                                    f"{self.members.log_tail()}"

    def _expected(self) -> list:
        if self.app == "stateless":
            return [f"{v}:out".encode() for v in self.inputs]
        truth = collections.Counter(w for line in self.inputs for w in line.split())
        return [(w, i) for w, c in truth.items() for i in range(1, c + 1)]

    def _diff(self, expected: list, seen: list) -> tuple[int, int]:
        if self.app == "stateless":
            missing, extra = multiset_diff(expected, seen)
            return sum(missing.values()), sum(extra.values())
        got = [(k.decode(), struct.unpack(">q", v)[0]) for _, k, v in self.watch.records]
        missing, extra = multiset_diff(expected, got)
        return sum(missing.values()), sum(extra.values())


@pytest.fixture(autouse=True)
def _stop_everything_started():
    """Members and readers of every Run of the test are stopped even when the test fails."""
    yield
    for run in Run.started:
        run.members.stop_all()
        if run.watch.is_alive():
            run.watch.stop()
    Run.started.clear()


def _single_broker_outage(broker, run: Run, outage: float, started: bool = False) -> float:
    if not started:
        run.start()
    run.wait_for_progress()
    assert run.feeder.is_alive(), "the input finished before the fault: the test would prove nothing"
    run.fault_started = time.monotonic()
    broker.kill()
    time.sleep(outage)
    broker.restart()
    return time.monotonic()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:  # HTTPError (503) included
        return False


def _wait_ready(ports: dict[str, int], since: float, timeout: float) -> dict[str, float | None]:
    """Seconds from ``since`` until each member's /readyz first answers 200 (None: not within timeout)."""
    out: dict[str, float | None] = {name: None for name in ports}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(v is None for v in out.values()):
        for name, port in ports.items():
            if out[name] is None and _ready(port):
                out[name] = round(time.monotonic() - since, 1)
        time.sleep(0.5)
    return out


class Probes(threading.Thread):
    """Polls ``/healthz`` and ``/readyz`` of each member every 0.5 s, as Kubernetes would."""

    def __init__(self, ports: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.ports = ports
        self.seen: list[tuple[float, str, str, int]] = []  # (time, member, path, status)
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.5):
            for name, port in self.ports.items():
                for path in ("/healthz", "/readyz"):
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                            status = r.status
                    except urllib.error.HTTPError as e:
                        status = e.code
                    except OSError:
                        status = -1  # not listening (yet)
                    self.seen.append((time.monotonic(), name, path, status))

    def stop(self) -> None:
        self._done.set()
        self.join(10)


@pytest.mark.timeout(420)
@pytest.mark.parametrize("outage,protocol", [
    (5, "consumer"), pytest.param(5, "classic", marks=pytest.mark.extended_chaos), (30, "consumer")])
def test_stateless_members_survive_a_broker_kill9_and_restart(kafka_local_broker, tmp_path, outage, protocol):
    run = Run(kafka_local_broker.bootstrap_servers, tmp_path, extra_env={"KSTREAMLET_GROUP_PROTOCOL": protocol})
    ports = {name: free_port() for name in run.names}
    probes = Probes(ports)
    run.start(http_ports=ports)
    probes.start()
    end = _single_broker_outage(kafka_local_broker, run, outage, started=True)
    run.finish(end, f"stateless ({protocol} group protocol), broker kill -9, {outage}s outage", ready_ports=ports)
    probes.stop()
    after_start = [x for x in probes.seen if x[3] != -1 and x[0] < run.stopping_at]
    unhealthy = [x for x in after_start if x[2] == "/healthz" and x[3] != 200]
    assert not unhealthy, f"liveness must stay healthy while a member rides out the outage: {unhealthy[:5]}"
    if outage >= 30:
        # Past the transaction timeout every member has given up its producer and waits for the
        # cluster: not ready then, ready again afterwards.
        down = {n for t, n, p, st in after_start if p == "/readyz" and st == 503 and run.fault_started < t < end}
        assert down == set(run.names), f"expected every member not ready during the outage; not ready: {down}"
    # Ready again once the cluster is back (a member whose clients were rebuilt rejoins first;
    # the outputs may all be there before the last member's rejoin completes).
    never = [name for name, after in run.ready_after.items() if after is None]
    assert not never, f"{never} must be ready again after the outage (waited 90 s): {run.ready_after}\n" \
                      f"{run.members.log_tail()}"


@pytest.mark.timeout(420)
@pytest.mark.parametrize("outage", [pytest.param(5, marks=pytest.mark.extended_chaos), 30])
def test_wordcount_survives_a_broker_kill9_and_restart(kafka_local_broker, tmp_path, outage):
    run = Run(kafka_local_broker.bootstrap_servers, tmp_path, app="wordcount", n=30_000, rate=1_500)
    end = _single_broker_outage(kafka_local_broker, run, outage)
    run.finish(end, f"wordcount, broker kill -9, {outage}s outage")


def _cluster_fault(cluster, run: Run, pick: Callable[[], int | None], what: str, down: float = 10.0) -> float:
    run.start()
    run.wait_for_progress()
    assert run.feeder.is_alive(), "the input finished before the fault: the test would prove nothing"
    victim = pick()
    assert victim is not None, f"could not find the {what}"
    run.fault_started = time.monotonic()
    cluster.node(victim).kill()
    print(f"\nkilled node {victim} ({what})")
    time.sleep(down)
    cluster.node(victim).restart()
    return time.monotonic()


@pytest.mark.timeout(420)
@pytest.mark.parametrize("app", [pytest.param("stateless", marks=pytest.mark.extended_chaos), "wordcount"])
def test_members_survive_losing_the_partition_leader(kafka_cluster, tmp_path, app):
    run = Run(kafka_cluster.bootstrap_servers, tmp_path, app=app, n=30_000, rate=1_500)
    end = _cluster_fault(kafka_cluster, run, lambda: kafka_cluster.leader(run.inp, 0), "leader of the input partition 0")
    run.finish(end, f"{app}, 3-node cluster, partition leader kill -9")


@pytest.mark.timeout(420)
@pytest.mark.parametrize("app", ["stateless", "wordcount"])
def test_members_survive_losing_the_group_and_transaction_coordinator(kafka_cluster, tmp_path, app):
    run = Run(kafka_cluster.bootstrap_servers, tmp_path, app=app, n=30_000, rate=1_500)
    end = _cluster_fault(kafka_cluster, run, kafka_cluster.transaction_coordinator, "transaction coordinator")
    run.finish(end, f"{app}, 3-node cluster, transaction coordinator kill -9 (group coordinator: node "
                    f"{kafka_cluster.group_coordinator()})")


@pytest.mark.timeout(420)
@pytest.mark.parametrize("app", [pytest.param("stateless", marks=pytest.mark.extended_chaos), "wordcount"])
def test_a_member_frozen_past_its_session_and_transaction_timeouts_is_fenced_and_rejoins(
        kafka_local_broker, tmp_path, app):
    """SIGSTOP of one member for 25 s (past the 10 s session and transaction timeouts): the others
    take its partitions; after SIGCONT the zombie's checkpoint is fenced, it drops its tasks,
    rebuilds its clients and rejoins, and none of its stale work becomes visible."""
    run = Run(kafka_local_broker.bootstrap_servers, tmp_path, app=app, n=45_000, rate=1_000)
    run.start()
    run.wait_for_progress()
    run.fault_started = time.monotonic()
    run.members.pause("m2")
    time.sleep(25)
    resumed = datetime.now(timezone.utc).isoformat()
    run.members.resume("m2")
    end = time.monotonic()
    deadline = end + 60
    while not [e for e in run.members.events("m2", "partitions assigned") if e["timestamp"] > resumed]:
        assert time.monotonic() < deadline, f"the zombie did not rejoin within 60 s\n{run.members.log_tail()}"
        time.sleep(0.3)
    run.finish(end, f"{app}, member SIGSTOP 25 s then SIGCONT")


@pytest.mark.timeout(420)
def test_sigterm_while_the_broker_is_down_exits_0_in_time_and_loses_nothing(kafka_local_broker, tmp_path):
    """The broker is killed; 3 s later every member gets SIGTERM: each must exit 0 within
    shutdown_timeout although nothing answers. The broker and the members come back; every
    input is then output exactly once."""
    run = Run(kafka_local_broker.bootstrap_servers, tmp_path, app="wordcount", n=20_000, rate=1_000,
              extra_env={"KSTREAMLET_SHUTDOWN_TIMEOUT": "20"})
    run.start()
    run.wait_for_progress()
    run.fault_started = time.monotonic()
    kafka_local_broker.kill()
    time.sleep(3)
    stops = {n: run.members.terminate(n, timeout=40) for n in run.names}
    kafka_local_broker.restart()
    end = time.monotonic()
    print(f"\nSIGTERM with the broker down: (exit code, seconds) per member {stops}")
    assert all(rc == 0 for rc, _ in stops.values()), f"expected exit 0 for every member: {stops}\n" \
                                                      f"{run.members.log_tail()}"
    assert all(sec < 20 for _, sec in stops.values()), f"expected each to exit within shutdown_timeout: {stops}"
    for name in run.names:
        run.members.start(name, {"KSTREAMLET_STATE_DIR": str(tmp_path) + f"/state-{name}"})
    run.finish(end, "wordcount, SIGTERM while the broker is down, then restart")
