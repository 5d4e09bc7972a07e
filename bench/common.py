"""What every benchmark scenario shares: machine facts, input loading, output verification,
measured worker subprocesses, timing probes, and result tables.

Measurement model: each measured run is a fresh subprocess (``python -m bench _worker
<scenario> ...``) that joins a fresh consumer group, reads the whole input topic from the
beginning into a fresh output topic and prints one ``BENCH_RESULT {json}`` line. Its
:class:`Probe` starts the clock when the first batch of records reaches the processing code
(so process start, imports, topic checks and the group join are excluded) and stops it
when the last expected record has been processed. The parent then counts the output with a
``read_committed`` reader; a run whose output is not exactly the input is WRONG.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RESULT_PREFIX = "BENCH_RESULT "


# --- machine and versions ---------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version_str(v: Any) -> str:
    return str(v[0] if isinstance(v, tuple) else v)


def machine_info() -> dict[str, Any]:
    import confluent_kafka

    from kstreamlet.dev.kafka import KAFKA_VERSION

    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gb = None
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "kafka_version": KAFKA_VERSION,
        "confluent_kafka": _version_str(confluent_kafka.version()),
        "librdkafka": confluent_kafka.libversion()[0],
        "loadavg_at_start": list(os.getloadavg()),
    }


# --- which kstreamlet is measured -------------------------------------------------------------

def add_source_argument(p: Any) -> None:
    p.add_argument("--kstreamlet-ref", metavar="GIT_REF",
                   help="measure kstreamlet as committed at this git revision (exported to a temp dir) "
                        "instead of the working tree, e.g. HEAD while the tree is being edited")


def source_fingerprint(package_dir: Path) -> str:
    """Short sha256 over the package's .py files (path + content), to tell code versions apart."""
    h = hashlib.sha256()
    for f in sorted(package_dir.rglob("*.py")):
        h.update(str(f.relative_to(package_dir)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def kstreamlet_root(ref: str | None) -> tuple[Path, dict[str, Any]]:
    """The directory whose ``kstreamlet/`` the workers import, and facts about it.

    Without ``ref``: the working tree (``REPO_ROOT``). With ``ref``: ``git archive`` of that
    revision's ``kstreamlet/`` into a temp dir (the repository itself is only read)."""
    facts: dict[str, Any] = {"git_head": git("rev-parse", "--short", "HEAD")}
    if not ref:
        facts["source"] = "working tree"
        facts["kstreamlet_dirty"] = bool(git("status", "--porcelain", "--", "kstreamlet"))
        return REPO_ROOT, facts
    commit = git("rev-parse", "--short", f"{ref}^{{commit}}")
    if not commit:
        raise SystemExit(f"bench: git revision {ref!r} not found")
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", commit, "kstreamlet"],
                             capture_output=True, check=True, timeout=60).stdout
    root = Path(tempfile.mkdtemp(prefix=f"kstreamlet-{commit}-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        tf.extractall(root)
    facts["source"] = f"git {ref} ({commit})"
    return root, facts


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- worker side -------------------------------------------------------------------------------

def cpu_seconds() -> float:
    """CPU time of this whole process (all threads, including librdkafka's)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def machine_cpu_ticks() -> tuple[int, int] | None:
    """(total, idle) jiffies of all CPUs from /proc/stat, or None where unavailable."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(v), v[3] + (v[4] if len(v) > 4 else 0)


class Probe:
    """Timing of one measured run, kept by the worker process.

    ``first()`` when the first batch reaches the processing code, ``last()`` once the
    target count has been processed, ``committed()`` after each commit (the last call
    is the final commit that makes the output visible).
    """

    def __init__(self, target: int, warmup: int = 0) -> None:
        self.target = target
        #: ``--warmup-records``: the clock starts only once this many records are processed
        #: (:meth:`progress`), so JIT / cache warm-up is outside the measured part.
        self.warmup = max(0, warmup)
        #: records already processed when the clock started (subtracted from ``processed``)
        self.at_first = 0
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.t_committed: float | None = None
        self.cpu_first = 0.0
        self.cpu_last = 0.0
        self.box_first: tuple[int, int] | None = None
        self.box_last: tuple[int, int] | None = None
        self.processed = 0
        self.commits = 0

    def progress(self, processed: int) -> None:
        """Records processed so far (called per batch or per record): starts the clock once
        ``warmup`` records are done (at the first call without a warm-up)."""
        if self.t_first is None and processed >= max(self.warmup, 1):
            self.first()
            self.at_first = processed if self.warmup else 0

    def first(self) -> None:
        if self.t_first is None:
            self.t_first = time.monotonic()
            self.cpu_first = cpu_seconds()
            self.box_first = machine_cpu_ticks()

    def last(self, processed: int) -> None:
        if self.t_last is None:
            self.t_last = time.monotonic()
            self.cpu_last = cpu_seconds()
            self.box_last = machine_cpu_ticks()
            self.processed = processed

    def committed(self) -> None:
        self.t_committed = time.monotonic()
        self.commits += 1

    def result(self, **extra: Any) -> dict[str, Any]:
        if self.t_first is None or self.t_last is None:
            return {"ok": False, "error": "target not reached", "processed": self.processed, **extra}
        secs = max(self.t_last - self.t_first, 1e-9)
        measured = self.processed - self.at_first
        busy = None
        if self.box_first and self.box_last and self.box_last[0] > self.box_first[0]:
            total = self.box_last[0] - self.box_first[0]
            idle = self.box_last[1] - self.box_first[1]
            busy = 100.0 * (total - idle) / total
        return {
            "ok": True,
            "processed": measured,
            "warmup_records": self.at_first,
            "seconds": secs,
            "rate": measured / secs,
            "cpu_seconds": self.cpu_last - self.cpu_first,
            "cpu_us_per_record": (self.cpu_last - self.cpu_first) / max(measured, 1) * 1e6,
            "machine_busy_pct": busy,
            "seconds_to_final_commit": (self.t_committed - self.t_first) if self.t_committed and self.t_committed >= self.t_last else None,
            "commits": self.commits,
            # CLOCK_MONOTONIC (the same clock in every process, Java's System.nanoTime too): the
            # parent matches the window with its broker CPU samples and combines --workers runs
            "t_first_mono": self.t_first,
            "t_last_mono": self.t_last,
            **extra,
        }


def process_cpu_ticks(pid: int) -> int | None:
    """utime + stime (clock ticks) of process ``pid`` from /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted after "(comm)"


class CpuSampler:
    """Samples (monotonic time, broker process CPU ticks, machine total/idle ticks) every
    ``every`` s in a thread, so that the CPU share of the broker in any worker's timed window
    (``t_first_mono``..``t_last_mono`` of its result) can be read afterwards."""

    def __init__(self, pid: int | None, every: float = 0.1) -> None:
        self.pid = pid
        self.every = every
        self.samples: list[tuple[float, int | None, tuple[int, int] | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="bench-cpu-sampler")

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while True:
            self.samples.append((time.monotonic(), process_cpu_ticks(self.pid) if self.pid else None,
                                 machine_cpu_ticks()))
            if self._stop.wait(self.every):
                return

    def _at(self, t: float) -> tuple[float, int | None, tuple[int, int] | None] | None:
        s = list(self.samples)
        return min(s, key=lambda x: abs(x[0] - t)) if s else None

    def window(self, t0: float | None, t1: float | None) -> dict[str, Any]:
        """Broker CPU (% of the whole machine and CPU seconds) and machine busy % in [t0, t1]."""
        if t0 is None or t1 is None or t1 <= t0:
            return {}
        a, b = self._at(t0), self._at(t1)
        if a is None or b is None or b[0] <= a[0]:
            return {}
        hz = os.sysconf("SC_CLK_TCK")
        out: dict[str, Any] = {"sampled_seconds": b[0] - a[0]}
        if a[2] and b[2] and b[2][0] > a[2][0]:
            total = b[2][0] - a[2][0]
            out["machine_busy_pct"] = 100.0 * (total - (b[2][1] - a[2][1])) / total
            if a[1] is not None and b[1] is not None:
                out["broker_cpu_seconds"] = (b[1] - a[1]) / hz
                out["broker_machine_pct"] = 100.0 * (b[1] - a[1]) / total  # share of all CPUs' time
        return out


def emit_result(result: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


# --- parent side: measured subprocesses ---------------------------------------------------------

@dataclass
class WorkerOutcome:
    rc: int | None
    result: dict[str, Any] | None
    wall_seconds: float
    log_tail: str = ""
    timed_out: bool = False


def run_command(cmd: list[str], timeout: float, log_path: Path, cwd: Path = REPO_ROOT,
                env: dict[str, str] | None = None) -> WorkerOutcome:
    """Run any worker command (a Python worker, the Kafka Streams jar, ...): stderr to
    ``log_path``, the ``BENCH_RESULT`` line from stdout; killed after ``timeout`` s."""
    t0 = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        timed_out = False
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            out, _ = proc.communicate()
    result = None
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(RESULT_PREFIX):
            try:
                result = json.loads(line[len(RESULT_PREFIX):])
            except ValueError:
                pass
    tail = ""
    if proc.returncode != 0 or result is None or not result.get("ok"):
        try:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        except OSError:
            pass
    return WorkerOutcome(proc.returncode, result, time.monotonic() - t0, tail, timed_out)


def worker_env() -> dict[str, str]:
    """This environment with the repository on ``PYTHONPATH``: a worker whose cwd is another
    kstreamlet tree (``--kstreamlet-ref``) or whose python is another virtualenv finds ``bench``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_worker_with(python: str, scenario: str, argv: list[str], timeout: float, log_path: Path,
                    kstreamlet_dir: Path = REPO_ROOT) -> WorkerOutcome:
    """Run ``<python> -m bench _worker <scenario> <argv>`` and collect its result line.

    ``python`` may be another virtualenv's interpreter (Quix Streams, Faust): ``bench`` is
    found through ``PYTHONPATH``. The worker's cwd is ``kstreamlet_dir`` (first on
    ``sys.path`` under ``-m``), so its ``kstreamlet`` package is the one measured."""
    cmd = [python, "-m", "bench", "_worker", scenario, *argv]
    return run_command(cmd, timeout, log_path, cwd=kstreamlet_dir, env=worker_env())


def run_worker(scenario: str, argv: list[str], timeout: float, log_path: Path,
               kstreamlet_dir: Path = REPO_ROOT) -> WorkerOutcome:
    """Run ``python -m bench _worker <scenario> <argv>`` with this interpreter (see :func:`run_worker_with`)."""
    return run_worker_with(sys.executable, scenario, argv, timeout, log_path, kstreamlet_dir)


# --- other systems' virtualenvs ----------------------------------------------------------------

BENCH_CACHE = Path(os.path.expanduser("~/.cache/kstreamlet-bench"))
#: Quix Streams pins ``confluent-kafka<2.13``, so it runs from its own virtualenv.
QUIX_VERSION = "3.28.1"
DEFAULT_QUIX_VENV = BENCH_CACHE / "quix-venv"


def ensure_venv(venv: Path, requirements: list[str], what: str) -> str:
    """The python of ``venv``, created with ``pip install <requirements>`` if it does not exist yet."""
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"creating {venv} with {' '.join(requirements)} ({what}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        try:
            subprocess.run([str(py), "-m", "pip", "install", "-q", *requirements], check=True)
        except subprocess.CalledProcessError:
            import shutil

            shutil.rmtree(venv, ignore_errors=True)  # no half-made venv mistaken for a good one next time
            raise
    return str(py)


def venv_versions(py: str, code: str, what: str) -> dict[str, Any]:
    """Run ``code`` (which prints one JSON object last) with ``py``."""
    try:
        return json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True, check=True,
                                         timeout=120).stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        raise SystemExit(f"bench: {what} not usable with {py}: {e}") from e


def quix_python(override: str | None = None) -> str:
    """``override``, or the Quix virtualenv's python (created on first use)."""
    if override:
        return override
    return ensure_venv(DEFAULT_QUIX_VENV, [f"quixstreams=={QUIX_VERSION}"], "its own confluent-kafka")


def quix_versions(py: str) -> dict[str, Any]:
    code = ("import json, quixstreams, confluent_kafka; print(json.dumps({'quixstreams': quixstreams.__version__, "
            "'confluent_kafka': confluent_kafka.__version__, 'librdkafka': confluent_kafka.libversion()[0]}))")
    return venv_versions(py, code, "quixstreams")


# --- topics, input, verification -----------------------------------------------------------------

def admin_client(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})  # no INFO noise on the console


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from kstreamlet.runtime.topics import create_topics

    create_topics(admin_client(bootstrap), {name: partitions})


def delete_topic(bootstrap: str, name: str) -> None:
    from kstreamlet.runtime.topics import delete_topics

    delete_topics(admin_client(bootstrap), [name])


_LOWER = bytes(ord("a") + b % 26 for b in range(256))


def delete_run_topics(bootstrap: str, group: str, extra: list[str]) -> None:
    """The run's output topic and every internal topic named after its group / application id."""
    admin = admin_client(bootstrap)
    names = list(dict.fromkeys([t for t in admin.list_topics(timeout=10).topics if group in t] + extra))
    if names:
        from kstreamlet.runtime.topics import delete_topics

        delete_topics(admin, names)


def load_input(bootstrap: str, topic: str, records: int, size: int, seed: int = 42, chunk: int = 100_000) -> float:
    """Produce ``records`` records: key = 8-byte big-endian id ``0..records-1``, value =
    ``size`` pseudo-random lowercase letters (fixed ``seed``). Returns seconds taken."""
    from confluent_kafka import Producer

    p = Producer({
        "bootstrap.servers": bootstrap,
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "compression.type": "none",
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 500_000,
    })
    rng = random.Random(seed)
    produce = p.produce
    t0 = time.monotonic()
    for start in range(0, records, chunk):
        n = min(chunk, records - start)
        blob = rng.randbytes(n * size).translate(_LOWER)
        for j in range(n):
            i = start + j
            v = blob[j * size:(j + 1) * size]
            k = i.to_bytes(8, "big")
            while True:
                try:
                    produce(topic, v, k)
                    break
                except BufferError:
                    p.poll(0.05)
        p.poll(0)
    remaining = p.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} input records not acknowledged")
    return time.monotonic() - t0


@dataclass
class Verification:
    count: int = 0
    distinct: int = 0
    duplicates: int = 0
    unknown_keys: int = 0
    bad_values: int = 0
    seconds: float = 0.0
    complete: bool = False
    problems: list[str] = field(default_factory=list)
    #: with ``verify_output(..., keep_seen=True)``: byte i is 1 if id i was seen
    seen: bytearray | None = None

    def ok(self, expected: int) -> bool:
        return (self.complete and self.count == expected and self.distinct == expected
                and self.duplicates == 0 and self.unknown_keys == 0 and self.bad_values == 0)

    def describe(self, expected: int) -> str:
        if self.ok(expected):
            return f"OK ({self.count} records)"
        parts = [f"count={self.count} (expected {expected})", f"distinct={self.distinct}"]
        if self.duplicates:
            parts.append(f"duplicates={self.duplicates}")
        if self.unknown_keys:
            parts.append(f"unknown_keys={self.unknown_keys}")
        if self.bad_values:
            parts.append(f"bad_values={self.bad_values}")
        if not self.complete:
            parts.append("incomplete read")
        return "WRONG: " + ", ".join(parts + self.problems)


def verify_output(bootstrap: str, topic: str, expected: int, partitions: int, value_ok: Any,
                  idle_timeout: float = 15.0, keep_seen: bool = False) -> Verification:
    """Read ``topic`` completely with a ``read_committed`` reader; check every id
    ``0..expected-1`` appears exactly once and ``value_ok(value)`` holds for every value."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    v = Verification()
    t0 = time.monotonic()
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": unique("bench-verify"),
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    })
    try:
        high = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in range(partitions)}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        seen = bytearray(expected)
        done: set[int] = set()
        last_progress = time.monotonic()
        count = dup = unknown = bad = 0
        while len(done) < partitions and time.monotonic() - last_progress < idle_timeout:
            msgs = c.consume(10_000, 0.5)
            if msgs:
                last_progress = time.monotonic()
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if m.offset() >= high[m.partition()]:
                            done.add(m.partition())
                        continue
                    v.problems.append(f"consumer error {err}")
                    continue
                count += 1
                k = m.key()
                i = int.from_bytes(k, "big") if k is not None and len(k) == 8 else -1
                if 0 <= i < expected:
                    if seen[i]:
                        dup += 1
                    else:
                        seen[i] = 1
                else:
                    unknown += 1
                if not value_ok(m.value()):
                    bad += 1
        v.count, v.duplicates, v.unknown_keys, v.bad_values = count, dup, unknown, bad
        v.distinct = expected - seen.count(0)
        v.complete = len(done) == partitions
        if keep_seen:
            v.seen = seen
    finally:
        c.close()
    v.seconds = time.monotonic() - t0
    return v


def input_layout(bootstrap: str, topic: str, partitions: int, idle_timeout: float = 15.0) -> list[list[int]]:
    """The ids (8-byte big-endian keys) of ``topic`` per partition, in offset order: to check
    that a run stopped early (timed) committed a prefix of every input partition."""
    out: list[list[int]] = [[] for _ in range(partitions)]
    for k, _, p in read_topic(bootstrap, topic, partitions, idle_timeout).records:
        out[p].append(int.from_bytes(k or b"", "big"))
    return out


def prefix_gaps(layout: list[list[int]], seen: bytearray) -> int:
    """How many seen ids come after an unseen one in their input partition (0: the output
    is exactly a prefix of every input partition)."""
    gaps = 0
    for ids in layout:
        k = 0
        while k < len(ids) and seen[ids[k]]:
            k += 1
        gaps += sum(1 for i in ids[k:] if seen[i])
    return gaps


# --- statistics and tables --------------------------------------------------------------------------

def summarize(values: Iterable[float]) -> dict[str, float] | None:
    vs = sorted(values)
    if not vs:
        return None
    return {"median": statistics.median(vs), "min": vs[0], "max": vs[-1], "n": len(vs)}


def fmt_rate(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def write_results(name: str, markdown: str, data: dict[str, Any]) -> tuple[Path, Path]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    md_path = RESULTS_DIR / f"{name}.md"
    json_path = RESULTS_DIR / f"{name}.json"
    md_path.write_text(markdown)
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return md_path, json_path


# --- added for the window / join / latency scenarios: Kafka Streams, long-running workers, reading ---

def kafka_streams_support() -> tuple[Any, dict[str, Any] | None, str]:
    """``(module, versions, "")`` when ``bench/kafka_streams.py`` is importable and its jar
    builds, else ``(None, None, reason)``: Kafka Streams is then skipped with that reason."""
    import importlib

    try:
        mod = importlib.import_module("bench.kafka_streams")
    except Exception as e:  # noqa: BLE001 -- absent or broken module: skip the system
        return None, None, f"bench/kafka_streams.py not importable: {e!r}"
    try:
        mod.ensure_jar()
    except Exception as e:  # noqa: BLE001
        return None, None, f"Kafka Streams jar not available: {e!r}"
    try:
        versions = dict(mod.versions())
    except Exception as e:  # noqa: BLE001
        versions = {"error": repr(e)}
    return mod, versions, ""


def _parse_result(out: bytes) -> dict[str, Any] | None:
    result = None
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(RESULT_PREFIX):
            try:
                result = json.loads(line[len(RESULT_PREFIX):])
            except ValueError:
                result = {"ok": False, "error": "unparsable result line"}
    return result


def _log_tail(log_path: Path, n: int = 25) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def python_worker_command(python: str, scenario: str, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``python -m bench _worker <scenario> <argv>`` with ``bench`` on ``PYTHONPATH`` (run it with
    ``cwd`` = the kstreamlet root to measure, as :func:`run_worker` does)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return [python, "-m", "bench", "_worker", scenario, *argv], env


def start_command(cmd: list[str], log_path: Path, cwd: Path | None = None,
                  env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a long-running worker (latency): stdout piped (its result line), stderr to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    err = open(log_path, "wb")  # noqa: SIM115 -- closed right after the child has its own copy
    try:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    finally:
        err.close()  # the child has its own descriptor


def stop_command(proc: subprocess.Popen[bytes], log_path: Path, grace: float = 60.0) -> WorkerOutcome:
    """SIGTERM a worker started with :func:`start_command`, wait up to ``grace`` s (then kill)
    and collect its result line."""
    t0 = time.monotonic()
    timed_out = False
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        out, _ = proc.communicate()
    result = _parse_result(out or b"")
    tail = _log_tail(log_path) if result is None or not result.get("ok") else ""
    return WorkerOutcome(proc.returncode, result, time.monotonic() - t0, tail, timed_out)


@dataclass
class TopicContents:
    records: list[tuple[bytes | None, bytes | None, int]]  # (key, value, partition)
    complete: bool
    problems: list[str]
    seconds: float


def read_topic(bootstrap: str, topic: str, partitions: int, idle_timeout: float = 15.0) -> TopicContents:
    """Every record of ``topic``, read ``read_committed`` up to the end offsets seen at the start."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    t0 = time.monotonic()
    out: list[tuple[bytes | None, bytes | None, int]] = []
    problems: list[str] = []
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("bench-verify"),
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    try:
        high = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in range(partitions)}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        done = {p for p, h in high.items() if h == 0}
        last_progress = time.monotonic()
        while len(done) < partitions and time.monotonic() - last_progress < idle_timeout:
            msgs = c.consume(10_000, 0.5)
            if msgs:
                last_progress = time.monotonic()
            for m in msgs:
                err = m.error()
                part = m.partition() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if (m.offset() or 0) >= high[part]:
                            done.add(part)
                        continue
                    problems.append(f"consumer error {err}")
                    continue
                out.append((m.key(), m.value(), part))
        complete = len(done) == partitions
    finally:
        c.close()
    return TopicContents(out, complete, problems, time.monotonic() - t0)


def verify_exact(contents: TopicContents, expected: dict[Any, Any], noun: str, *,
                 key_of: Callable[[bytes], Any], value_of: Callable[[bytes | None], Any],
                 is_flush: Callable[[bytes | None], bool],
                 show: Callable[[bytes, Any, Any], str]) -> dict[str, Any]:
    """Exactly one output record per expected key, with the expected value (keyed scenarios).

    ``key_of(raw key)`` gives the key of ``expected`` (raising ``ValueError``/``AttributeError``
    for a malformed key: counted unknown), ``value_of(raw value)`` the value compared with it;
    records with ``is_flush(raw key)`` (the ``__flush__`` inputs' own outputs) are only counted;
    ``show(raw key, got, expected)`` describes a wrong value in the samples."""
    seen: set[Any] = set()
    dup = unknown = wrong = flush = 0
    samples: list[str] = []
    for k, v, _ in contents.records:
        if is_flush(k):
            flush += 1
            continue
        try:
            key = key_of(k)  # type: ignore[arg-type]
        except (AttributeError, ValueError):
            unknown += 1
            continue
        exp = expected.get(key)
        if exp is None:
            unknown += 1
            if len(samples) < 5:
                samples.append(f"unexpected key {k!r}")
            continue
        if key in seen:
            dup += 1
        seen.add(key)
        got = value_of(v)
        if got != exp:
            wrong += 1
            if len(samples) < 5:
                samples.append(show(k, got, exp))  # type: ignore[arg-type]
    missing = len(expected) - len(seen)
    ok = contents.complete and not (missing or dup or unknown or wrong or contents.problems)
    n = len(contents.records)
    desc = (f"OK ({len(expected):,} {noun}, {n:,} output records)" if ok else "WRONG: " + ", ".join(
        [f"missing={missing}", f"duplicates={dup}", f"wrong_values={wrong}", f"unknown_keys={unknown}"]
        + ([] if contents.complete else ["incomplete read"]) + contents.problems[:3]
        + ([f"e.g. {'; '.join(samples)}"] if samples else [])))
    return {"ok": ok, "describe": desc, "output_records": n, "expected": len(expected), "missing": missing,
            "duplicates": dup, "wrong_values": wrong, "unknown_keys": unknown, "flush_outputs": flush,
            "samples": samples, "complete": contents.complete, "seconds": round(contents.seconds, 2)}


def cell(s: dict[str, float] | None, fmt: str = "{:,.0f}") -> str:
    """``median (min–max)`` of a :func:`summarize` result."""
    if not s:
        return "—"
    if s.get("n", 2) < 2:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


# --- Quix Streams workers --------------------------------------------------------------------------

def run_quix_to_target(build: Callable[..., Any], probe: Probe, target: int, timeout: float) -> None:
    """``build(on_message_processed=...)`` returns the Quix Application; run it until ``target``
    consumed messages are processed (its ``on_message_processed`` callback, as bench/stateful.py)."""
    from quixstreams.checkpointing.checkpoint import Checkpoint  # type: ignore[import-not-found]

    state = {"n": 0}
    holder: dict[str, Any] = {}
    orig_commit = Checkpoint.commit

    def commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        r = orig_commit(self, *args, **kwargs)
        if probe.t_first is not None:
            probe.committed()
        return r

    Checkpoint.commit = commit  # type: ignore[method-assign]

    def on_processed(topic: str, partition: int, offset: int) -> None:
        n = state["n"] + 1
        state["n"] = n
        if probe.t_first is None:
            probe.progress(n)
        if n >= target and probe.t_last is None:
            probe.last(n)
            holder["app"].stop()

    app = build(on_message_processed=on_processed)
    holder["app"] = app
    timer = threading.Timer(timeout, app.stop)
    timer.daemon = True
    timer.start()
    app.run()
    timer.cancel()


# --- shared by the throughput scenarios: --warmup-records and one run under cProfile -----------------

def add_warmup_records_argument(p: Any) -> None:
    """``--warmup-records N`` of a scenario's parent parser (as bench/stateful.py)."""
    p.add_argument("--warmup-records", type=int, default=0, metavar="N",
                   help="start each measured run's clock only after its first N input records, in the same "
                        "process / JVM as the measured part (JIT and cache warm-up outside it, for every system "
                        "alike; default 0 = cold, from the first record)")


def add_profile_argument(p: Any) -> None:
    """``--profile`` of a scenario's parent parser: one more kstreamlet run under cProfile, written by
    :func:`write_profile` (the report renders its top functions)."""
    p.add_argument("--profile", action="store_true",
                   help="also run kstreamlet once under cProfile (not in the table) -> "
                        "results/<out>-profile.txt and -profile.json")


def add_worker_measure_arguments(w: Any) -> None:
    """The worker side of :func:`add_warmup_records_argument` and :func:`add_profile_argument`."""
    w.add_argument("--warmup-records", type=int, default=0)
    w.add_argument("--profile-out", help="cProfile stats of the timed window to this file")


class WorkerProfiler:
    """cProfile over a worker's timed window only (``start`` when its clock starts, ``stop`` when it
    stops); a no-op without a path. ``dump`` writes the stats for :func:`write_profile`."""

    def __init__(self, path: str | None) -> None:
        import cProfile

        self.path = path
        self.prof = cProfile.Profile() if path else None
        self.on = False

    def start(self) -> None:
        if self.prof is not None and not self.on:
            self.prof.enable()
            self.on = True

    def stop(self) -> None:
        if self.prof is not None and self.on:
            self.prof.disable()
            self.on = False

    def dump(self) -> None:
        self.stop()
        if self.prof is not None and self.path:
            self.prof.dump_stats(self.path)


def _func_label(key: tuple[str, int, str]) -> str:
    path, line, name = key
    if path == "~":
        return name  # a built-in: "<method 'produce' of 'cimpl.Producer' objects>"
    parts = Path(path).parts
    for i, part in enumerate(parts):  # from the package on: kstreamlet/runtime/member.py
        if part in ("kstreamlet", "bench", "confluent_kafka", "rocksdict", "quixstreams"):
            return f"{'/'.join(parts[i:])}:{line}({name})"
    return f"{'/'.join(parts[-2:])}:{line}({name})"


def profile_area(label: str) -> str:
    """A coarse owner of a profiled function, for the one-line reading of a profile."""
    if "cimpl." in label or "confluent_kafka" in label:
        return "Kafka client (librdkafka calls)"
    if "rocksdict" in label or "Rdict" in label or "WriteBatch" in label:
        return "RocksDB (rocksdict)"
    if label.startswith("kstreamlet/"):
        sub = label.split("/")[1].split(".py")[0].split(":")[0]
        return f"kstreamlet {sub}"
    if label.startswith("bench/"):
        return "benchmark job code"
    if label.startswith(("<built-in", "<method")):
        return "Python built-ins"
    return "other Python"


def write_profile(stem: str, stats_path: Path, header: list[str], run: dict[str, Any], top: int = 30) -> Path:
    """``results/<stem>-profile.txt`` (pstats by own and by cumulative time) and ``-profile.json``
    (the top functions and the own time per area, for ``python -m bench report``)."""
    import pstats

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    txt, js = RESULTS_DIR / f"{stem}-profile.txt", RESULTS_DIR / f"{stem}-profile.json"
    buf = io.StringIO()
    data: dict[str, Any] = {"header": header, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                            "run": {k: run.get(k) for k in ("rate", "seconds", "processed", "status", "cpu_us_per_record")}}
    if stats_path.exists():
        st = pstats.Stats(str(stats_path), stream=buf)
        raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
        total = sum(tt for (_, _, tt, _, _) in raw.values()) or 1e-9
        funcs = [{"function": _func_label(k), "ncalls": nc, "tottime": tt, "cumtime": ct}
                 for k, (_, nc, tt, ct, _) in raw.items()]
        areas: dict[str, float] = {}
        for f in funcs:
            areas[profile_area(f["function"])] = areas.get(profile_area(f["function"]), 0.0) + f["tottime"]
        data.update(total_seconds=total, function_count=len(funcs),
                    top_tottime=sorted(funcs, key=lambda f: -f["tottime"])[:top],
                    top_cumtime=sorted(funcs, key=lambda f: -f["cumtime"])[:top],
                    areas=dict(sorted(areas.items(), key=lambda kv: -kv[1])))
        st.strip_dirs().sort_stats("tottime").print_stats(top)
        buf.write("\n--- by cumulative time ---\n")
        st.sort_stats("cumulative").print_stats(top)
    else:
        data["error"] = f"no profile stats written ({run.get('status')})"
    txt.write_text("\n".join(header) + "\n" + f"run: {run.get('rate') or 0:,.0f} rec/s, {run.get('seconds') or 0:.2f} s, "
                   f"status {run.get('status')}\nprofiled over the timed window only (rates are lowered by the "
                   "profiler's overhead):\n\n" + buf.getvalue())
    js.write_text(json.dumps(data, indent=2) + "\n")
    print(f"written {txt} and {js}")
    return js
