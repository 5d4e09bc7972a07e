"""A real Apache Kafka broker on demand, for tests, demos and benchmarks.

Backends, in order (see :func:`kafka_broker`):

1. ``KSTREAMLET_BOOTSTRAP_SERVERS`` — an external cluster, used as is.
2. Testcontainers' Kafka module, when a Docker engine answers.
3. :class:`LocalKafkaBroker` — Apache Kafka's own jars, resolved from Maven Central
   with ``mvn`` into ``~/.cache/kstreamlet/kafka-<version>`` (once), formatted as a
   single KRaft node (broker + controller) and started with ``java`` on free
   127.0.0.1 ports.

Example::

    from kstreamlet.dev.kafka import kafka_broker

    with kafka_broker() as broker:
        print(broker.bootstrap_servers)

A secured broker (or cluster): ``LocalKafkaBroker(security=BrokerSecurity(...))`` adds a
``SASL_SSL`` listener (SCRAM-SHA-512 over a throwaway CA, ``sasl_bootstrap_servers``) and turns on
the KRaft ``StandardAuthorizer``; the plaintext listener stays, as a super user
(:mod:`kstreamlet.dev.security`, docs/security.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

from kstreamlet.dev._process import live_state, stop_pid
from kstreamlet.dev._net import docker_available, free_port, port_in_use
from kstreamlet.dev.security import ADMIN_USER, BrokerSecurity

log = logging.getLogger("kstreamlet.dev.kafka")

#: The Apache Kafka release the local broker runs (``org.apache.kafka:kafka_2.13``).
KAFKA_VERSION = os.environ.get("KSTREAMLET_KAFKA_VERSION", "4.4.0")
_LOG4J2_VERSION = "2.24.3"
_SLF4J_VERSION = "2.0.17"


class KafkaStartError(RuntimeError):
    """The broker could not be provided; the message says what is missing and how to fix it."""


class Broker(Protocol):
    """What every backend offers."""

    bootstrap_servers: str
    backend: str
    startup_seconds: float


def cache_dir() -> Path:
    """Where jars and dev-broker state are cached (``KSTREAMLET_CACHE_DIR`` overrides)."""
    base = os.environ.get("KSTREAMLET_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kstreamlet"
    )
    return Path(base)


def _require_tool(name: str, how: str) -> str:
    path = shutil.which(name)
    if not path:
        raise KafkaStartError(f"`{name}` was not found on PATH; it is needed for the local Kafka broker. {how}")
    return path


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.kstreamlet</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{slf4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      # Transaction markers the coordinator skips (a partition without a leader is taken for
      # deleted): the cause of a transaction left hanging after a restart.
      - name: kafka.coordinator.transaction.TransactionMarkerChannelManager
        level: INFO
"""


def ensure_kafka_jars(version: str = KAFKA_VERSION, timeout: float = 900.0) -> Path:
    """Resolve Kafka's jars from Maven Central into the cache (idempotent) and return the lib dir.

    A complete download is marked by a ``.complete`` file, so an interrupted one is redone.
    """
    home = cache_dir() / f"kafka-{version}"
    libs = home / "libs"
    if (home / ".complete").exists():
        log_config = home / "log4j2.yaml"
        if not log_config.exists() or log_config.read_text() != _LOG4J2:
            log_config.write_text(_LOG4J2)  # a cache from an earlier version: its logging setup
        return libs
    mvn = _require_tool("mvn", "Install Maven (Debian: `apt-get install -y maven`).")
    _require_tool("java", "Install a Java 17+ runtime (Debian: `apt-get install -y openjdk-17-jre-headless`).")
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="resolve-", dir=home))
    try:
        (staging / "pom.xml").write_text(_POM.format(kafka=version, slf4j=_SLF4J_VERSION, log4j=_LOG4J2_VERSION))
        print(f"kstreamlet: resolving Apache Kafka {version} from Maven Central into {home} ...", file=sys.stderr)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                [mvn, "-q", "-B", "dependency:copy-dependencies", "-DoutputDirectory=libs", "-DincludeScope=runtime"],
                cwd=staging,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise KafkaStartError(f"Maven did not resolve Kafka {version} within {timeout:.0f}s") from e
        if proc.returncode != 0:
            raise KafkaStartError(
                f"Maven failed to resolve org.apache.kafka:kafka_2.13:{version} (exit {proc.returncode}):\n"
                + "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            )
        if libs.exists():
            shutil.rmtree(libs)
        (staging / "libs").rename(libs)
        (home / "log4j2.yaml").write_text(_LOG4J2)
        (home / ".complete").write_text(version)
        print(f"kstreamlet: Kafka {version} jars cached in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def _wait_for_metadata(bootstrap: str, deadline: float, alive: Callable[[], bool]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 2000, "log_level": 0})
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise KafkaStartError("the broker process exited during start")
        try:
            md = admin.list_topics(timeout=2)
            if md.brokers:
                return
        except Exception as e:  # KafkaException while the broker is coming up
            last = e
        time.sleep(0.2)
    raise KafkaStartError(f"broker at {bootstrap} did not answer metadata in time (last error: {last})")


class LocalKafkaBroker:
    """One KRaft node (broker + controller) run from Apache Kafka's jars.

    Alone (the default), settings fit one node and transactions: replication factor 1 for
    internal topics, ``transaction.state.log.min.isr=1``, no initial rebalance delay, no auto
    topic creation. As a member of a :class:`LocalKafkaCluster` it is one voter of the
    cluster's quorum with the cluster's replication settings.

    Fault injection for tests: :meth:`kill` (``kill -9``), :meth:`terminate` (clean stop),
    :meth:`pause`/:meth:`resume` (SIGSTOP/SIGCONT) and :meth:`restart` (same data dir and
    ports, so clients reconnect to the address they know). Logs and data live in a temp dir
    that :meth:`stop` removes (unless ``keep_dir``).

    ``security`` (:class:`~kstreamlet.dev.security.BrokerSecurity`): a ``SASL_SSL`` listener on
    ``sasl_bootstrap_servers`` besides the plaintext one, SCRAM users created when the storage is
    formatted, ACLs enforced (plaintext and the ``admin`` user are super users).
    """

    backend = "local"

    def __init__(
        self,
        version: str = KAFKA_VERSION,
        port: int | None = None,
        workdir: Path | None = None,
        heap: str = "1g",
        extra_config: dict[str, str] | None = None,
        keep_dir: bool = False,
        node_id: int = 1,
        controller_port: int | None = None,
        voters: str | None = None,
        cluster_id: str | None = None,
        security: BrokerSecurity | None = None,
        sasl_port: int | None = None,
    ) -> None:
        self.version = version
        if port is not None and port_in_use(port):
            raise KafkaStartError(f"port {port} on 127.0.0.1 is already in use; choose another or omit it")
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.node_id = node_id
        self.voters = voters or f"{node_id}@127.0.0.1:{self.controller_port}"
        self.cluster_id = cluster_id
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kstreamlet-kafka-"))
        self.heap = heap
        self.extra_config = extra_config or {}
        self.keep_dir = keep_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        #: With ``security``: a ``SASL_SSL`` listener (SCRAM-SHA-512 over TLS) besides the plaintext
        #: one, and the StandardAuthorizer on (dev/security.py); None otherwise.
        self.security = security
        self.sasl_port = (sasl_port or free_port()) if security is not None else None
        self.sasl_bootstrap_servers = f"127.0.0.1:{self.sasl_port}" if security is not None else None
        self._formatted = False

    @property
    def log_file(self) -> Path:
        return self.workdir / "broker.log"

    def _config(self) -> str:
        listeners = f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
        advertised = f"PLAINTEXT://127.0.0.1:{self.port}"
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        if self.security is not None:
            listeners += f",SASL_SSL://127.0.0.1:{self.sasl_port}"
            advertised += f",SASL_SSL://127.0.0.1:{self.sasl_port}"
            protocols += ",SASL_SSL:SASL_SSL"
        cfg = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": listeners,
            "advertised.listeners": advertised,
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": protocols,
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            # A kill -9'd member's transaction must not block read_committed readers for the
            # default 15 min; clients ask for their own timeout up to this cap.
            "transaction.max.timeout.ms": "900000",
            "log.retention.check.interval.ms": "60000",
            # Tests replay fixed event times (often far in the past): no time-based deletion.
            "log.retention.ms": "-1",
            # Tests often create many short-lived topics; keep segment files small.
            "log.segment.bytes": str(64 * 1024 * 1024),
            "group.consumer.session.timeout.ms": "10000",
            "group.consumer.min.session.timeout.ms": "3000",
            "group.consumer.heartbeat.interval.ms": "1000",
            "group.consumer.min.heartbeat.interval.ms": "500",
        }
        if self.security is not None:
            cfg.update(self.security.broker_config())
        cfg.update(self.extra_config)
        return "".join(f"{k}={v}\n" for k, v in cfg.items())

    def _java_cmd(self, libs: Path, main: str, *args: str, heap: str = "256m") -> list[str]:
        java = _require_tool("java", "Install a Java 17+ runtime (Debian: `apt-get install -y openjdk-17-jre-headless`).")
        return [
            java,
            f"-Xmx{heap}",
            f"-Dlog4j2.configurationFile={libs.parent / 'log4j2.yaml'}",
            "-Djava.awt.headless=true",
            "-cp",
            str(libs / "*"),
            main,
            *args,
        ]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    def format(self) -> None:
        """Write the config and format the KRaft storage (once; a restart keeps the data)."""
        libs = ensure_kafka_jars(self.version)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        props = self.workdir / "server.properties"
        props.write_text(self._config())
        cid = self.cluster_id or new_cluster_id()
        try:
            fmt = subprocess.run(
                self._java_cmd(libs, "kafka.tools.StorageTool", "format", "-t", cid, "-c", str(props),
                               *(self.security.format_args() if self.security is not None else [])),
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired as e:
            raise KafkaStartError("formatting the KRaft storage timed out after 60s") from e
        if fmt.returncode != 0:
            raise KafkaStartError(f"formatting the KRaft storage failed:\n{fmt.stdout}\n{fmt.stderr}")
        self._formatted = True

    def launch(self) -> None:
        """Start the JVM on the formatted storage without waiting for it to answer."""
        if not self._formatted:
            self.format()
        libs = ensure_kafka_jars(self.version)
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(
                self._java_cmd(libs, "kafka.Kafka", str(self.workdir / "server.properties"), heap=self.heap),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal is handled by us, not the JVM
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until this node answers metadata requests; on failure stop it and say why."""
        try:
            _wait_for_metadata(self.bootstrap_servers, time.monotonic() + timeout, self.alive)
        except KafkaStartError as e:
            tail = self.log_tail()
            self.kill()
            raise KafkaStartError(f"{e}\n--- broker {self.node_id} log tail ---\n{tail}") from None

    def start(self, timeout: float = 90.0) -> "LocalKafkaBroker":
        t0 = time.monotonic()
        self.launch()
        try:
            self.wait_ready(timeout)
        except KafkaStartError:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        log.info("kafka broker ready", extra={"bootstrap": self.bootstrap_servers, "seconds": self.startup_seconds})
        return self

    # --- fault injection (data and ports are kept) ----------------------------------------------

    def kill(self) -> None:
        """``kill -9`` the broker process (no clean shutdown); :meth:`restart` brings it back."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None

    def terminate(self, timeout: float = 60.0) -> None:
        """Clean (SIGTERM) shutdown, as in a rolling upgrade; :meth:`restart` brings it back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the process is alive but answers nothing (a frozen VM or a GC pause)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 90.0, wait: bool = True) -> None:
        """Start again on the same data directory and ports (after :meth:`kill` or :meth:`terminate`)."""
        if self.alive():
            raise KafkaStartError(f"broker {self.node_id} is still running; kill or terminate it first")
        self.launch()
        if wait:
            self.wait_ready(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.proc = None
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)  # a paused JVM cannot handle SIGTERM
        self.terminate(timeout)
        if self._own_dir and not self.keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalKafkaBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def new_cluster_id() -> str:
    """A KRaft cluster id. A base64url id may start with "-", which the storage tool's argument
    parser takes for an option (as Kafka's own Uuid.randomUuid() does, draw again in that case)."""
    import base64

    cid = "-"
    while cid.startswith("-"):
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return cid


class LocalKafkaCluster:
    """``n`` KRaft nodes on loopback (each broker + controller, one quorum), for failover tests.

    Internal topics are replicated to every node with ``min.insync.replicas = n - 1`` (the
    production shape: one node may be lost without losing writes); the group and transaction
    state topics have one partition each, so :meth:`group_coordinator` and
    :meth:`transaction_coordinator` name the one broker that hosts them for every group and
    transactional id. Each node can be killed, terminated, paused and restarted
    (``cluster.nodes[i]``, or :meth:`node`).

    Example::

        with LocalKafkaCluster(3) as cluster:
            cluster.node(cluster.transaction_coordinator()).kill()
    """

    backend = "local-cluster"

    def __init__(self, n: int = 3, version: str = KAFKA_VERSION, heap: str = "512m",
                 extra_config: dict[str, str] | None = None, security: BrokerSecurity | None = None) -> None:
        if n < 1:
            raise ValueError(f"a cluster needs at least one node, got {n}")
        self.n = n
        ports = [(free_port(), free_port()) for _ in range(n)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        rf = str(n)
        isr = str(max(1, n - 1))
        cfg = {
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": "1",
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            # Leadership returns to the preferred replica soon after a restart.
            "leader.imbalance.check.interval.seconds": "10",
            **(extra_config or {}),
        }
        cid = new_cluster_id()
        self.nodes = [
            LocalKafkaBroker(version=version, port=p, heap=heap, extra_config=cfg, node_id=i + 1,
                             controller_port=c, voters=voters, cluster_id=cid, security=security)
            for i, (p, c) in enumerate(ports)
        ]
        self.bootstrap_servers = ",".join(b.bootstrap_servers for b in self.nodes)
        #: All nodes share ``security`` (one CA, one set of SCRAM users); None without it.
        self.security = security
        self.sasl_bootstrap_servers = (",".join(str(b.sasl_bootstrap_servers) for b in self.nodes)
                                       if security is not None else None)
        self.startup_seconds = 0.0

    def node(self, node_id: int) -> LocalKafkaBroker:
        return self.nodes[node_id - 1]

    def start(self, timeout: float = 120.0) -> "LocalKafkaCluster":
        t0 = time.monotonic()
        try:
            for b in self.nodes:
                b.format()
            for b in self.nodes:  # the quorum needs a majority of voters up before any answers
                b.launch()
            for b in self.nodes:
                b.wait_ready(max(1.0, t0 + timeout - time.monotonic()))
            self._wait_internal_topics(t0 + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _admin(self) -> "object":
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})

    def _wait_internal_topics(self, deadline: float) -> None:
        """Create the group and transaction state topics now (a first client would otherwise
        wait for them), by asking for a group and a transactional coordinator once."""
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": self.bootstrap_servers, "transactional.id": f"cluster-warmup-{uuid.uuid4().hex}",
                      "log_level": 0})
        p.init_transactions(max(1.0, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            if self.leader("__transaction_state", 0) is not None:
                break
            time.sleep(0.2)
        del p

    def leader(self, topic: str, partition: int) -> int | None:
        """Node id leading ``topic[partition]``, or None when it has none (or is unknown)."""
        try:
            md = self._admin().list_topics(topic, timeout=10)  # type: ignore[attr-defined]
        except Exception:
            return None
        t = md.topics.get(topic)
        if t is None or t.error is not None or partition not in t.partitions:
            return None
        lead = t.partitions[partition].leader
        return lead if lead >= 0 else None

    def transaction_coordinator(self) -> int | None:
        """The node hosting every transactional id's coordinator (``__transaction_state[0]``)."""
        return self.leader("__transaction_state", 0)

    def group_coordinator(self) -> int | None:
        """The node hosting every group's coordinator (``__consumer_offsets[0]``), once a group committed."""
        return self.leader("__consumer_offsets", 0)

    def stop(self) -> None:
        for b in self.nodes:
            b.stop()
        if self.security is not None:
            self.security.cleanup()

    def __enter__(self) -> "LocalKafkaCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ExternalKafka:
    """A cluster someone else runs (``KSTREAMLET_BOOTSTRAP_SERVERS``)."""

    bootstrap_servers: str
    backend: str = "external"
    startup_seconds: float = 0.0


@contextlib.contextmanager
def _testcontainers_kafka() -> Iterator[Broker]:
    from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

    t0 = time.monotonic()
    with KafkaContainer().with_kraft() as kc:  # pragma: no cover - needs a Docker engine
        yield ExternalKafka(kc.get_bootstrap_server(), backend="testcontainers", startup_seconds=time.monotonic() - t0)


@contextlib.contextmanager
def kafka_broker(prefer: str | None = None) -> Iterator[Broker]:
    """Yield a running broker from the first backend that is available.

    ``prefer`` (or ``KSTREAMLET_KAFKA_BACKEND``) forces one of ``external``,
    ``testcontainers``, ``local``.
    """
    prefer = prefer or os.environ.get("KSTREAMLET_KAFKA_BACKEND")
    external = os.environ.get("KSTREAMLET_BOOTSTRAP_SERVERS")
    if prefer in (None, "external") and external:
        yield ExternalKafka(external)
        return
    if prefer == "testcontainers" or (prefer is None and docker_available()):
        with _testcontainers_kafka() as b:
            _announce(b)
            yield b
        return
    with LocalKafkaBroker() as b:
        _announce(b)
        yield b


def _announce(b: Broker) -> None:
    print(
        f"kstreamlet: Kafka broker ({b.backend}) ready at {b.bootstrap_servers} in {b.startup_seconds:.1f}s",
        file=sys.stderr,
    )


# --- a long-lived dev broker for people (``kstreamlet dev kafka up|down|status``) -------------

def _state_file() -> Path:
    return cache_dir() / "dev-kafka.json"


def dev_status() -> dict[str, object] | None:
    """The running dev broker's state, or None."""
    return live_state(_state_file())


#: Port of the dev broker when none is asked for.
DEV_PORT = 9092


def dev_up(port: int | None = None, secure: bool = False) -> dict[str, object]:
    """Start a detached broker on 127.0.0.1:``port`` (default 9092) that outlives this process.

    ``secure``: also a ``SASL_SSL`` listener (SCRAM-SHA-512 over a throwaway CA, the
    StandardAuthorizer on; dev/security.py) whose SCRAM user ``admin`` (a random password) is a
    super user, as the plaintext listener's ANONYMOUS is; the state then has ``sasl_bootstrap_servers`` and the ``env`` an app
    logs in with (``KSTREAMLET_SECURITY_PROTOCOL``, ``..._SASL_*``, ``..._SSL_CA_LOCATION``).

    Idempotent: a dev broker already running is returned as is (``"started": False``) when no
    port or its own port is asked for (and ``secure`` matches); asking for another port while one
    runs is a :class:`KafkaStartError` (stop it first), as is a port something else listens on."""
    state = dev_status()
    if state:
        running = str(state["bootstrap_servers"])
        if port is not None and not running.endswith(f":{port}"):
            raise KafkaStartError(
                f"a dev broker is already running at {running} (pid {state['pid']}), not on port {port}; "
                "use it, or stop it first with `kstreamlet dev kafka down`")
        if secure != bool(state.get("sasl_bootstrap_servers")):
            raise KafkaStartError(
                f"a dev broker {'without' if secure else 'with'} a SASL_SSL listener is already running at {running} "
                f"(pid {state['pid']}); stop it first with `kstreamlet dev kafka down`")
        return {**state, "started": False}
    workdir = cache_dir() / "dev-kafka"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    security = None
    if secure:
        security = BrokerSecurity(directory=workdir / "tls")
    broker = LocalKafkaBroker(port=DEV_PORT if port is None else port, workdir=workdir, keep_dir=True,
                              security=security)
    broker.start()
    assert broker.proc is not None
    state = {"pid": broker.proc.pid, "bootstrap_servers": broker.bootstrap_servers, "workdir": str(workdir),
             "version": broker.version, "startup_seconds": round(broker.startup_seconds, 2)}
    if security is not None:
        state["sasl_bootstrap_servers"] = broker.sasl_bootstrap_servers
        state["env"] = {"KSTREAMLET_BOOTSTRAP_SERVERS": str(broker.sasl_bootstrap_servers),
                        **security.env(ADMIN_USER)}
    _state_file().write_text(json.dumps(state))
    return {**state, "started": True}


def dev_down(timeout: float = 30.0) -> bool:
    """Stop the dev broker; returns whether one was running."""
    state = dev_status()
    if not state:
        return False
    stop_pid(int(state["pid"]), timeout)  # type: ignore[call-overload]
    _state_file().unlink(missing_ok=True)
    shutil.rmtree(str(state["workdir"]), ignore_errors=True)
    return True
