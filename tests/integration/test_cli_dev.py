"""`kstreamlet dev kafka|mysql up|status|down` against the real servers they start: the port
asked for is the port served, another port while one runs is a clear error, `up` again reuses
it, `down` stops it. Each test has its own KSTREAMLET_CACHE_DIR (state file, data dir); the
Kafka jars are linked from the shared cache. Every process started is stopped by its pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kstreamlet.dev._net import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kstreamlet.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie of ours is not alive either
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _stop_by_pid(cache: Path, state_file: str) -> None:
    """Last resort if `down` failed: kill the server the state file names."""
    try:
        pid = int(json.loads((cache / state_file).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def dev_env(tmp_path):
    from kstreamlet.dev import kafka

    cache = tmp_path / "cache"
    cache.mkdir()
    jars = kafka.ensure_kafka_jars().parent  # the shared jar cache (downloaded once)
    (cache / jars.name).symlink_to(jars)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KSTREAMLET_")}
    env["KSTREAMLET_CACHE_DIR"] = str(cache)
    return env, cache


def test_dev_kafka_up_serves_the_port_asked_for(dev_env):
    from confluent_kafka.admin import AdminClient

    env, cache = dev_env
    port = free_port()
    try:
        up = _cli(env, "dev", "kafka", "up", "--port", str(port))
        assert up.returncode == 0, up.stdout + up.stderr
        assert up.stdout == f"export KSTREAMLET_BOOTSTRAP_SERVERS=127.0.0.1:{port}\n", up.stdout
        assert "started at" in up.stderr
        md = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=20)
        assert md.brokers and all(b.port == port for b in md.brokers.values()), md.brokers

        other = _cli(env, "dev", "kafka", "up", "--port", str(port + 1))
        assert other.returncode == 2, other.stdout + other.stderr
        assert f"already running at 127.0.0.1:{port}" in other.stderr and f"not on port {port + 1}" in other.stderr
        assert other.stdout == ""

        again = _cli(env, "dev", "kafka", "up")
        assert again.returncode == 0 and again.stdout == up.stdout and "already running" in again.stderr

        status = _cli(env, "dev", "kafka", "status")
        assert status.returncode == 0 and json.loads(status.stdout)["bootstrap_servers"] == f"127.0.0.1:{port}"
        pid = int(json.loads(status.stdout)["pid"])
    finally:
        down = _cli(env, "dev", "kafka", "down", timeout=90)
        _stop_by_pid(cache, "dev-kafka.json")
    assert down.returncode == 0 and down.stdout.strip() == "stopped", down.stdout + down.stderr
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), "down stops the broker"
    assert _cli(env, "dev", "kafka", "status").returncode == 1


def test_dev_mysql_up_status_down(dev_env):
    pymysql = pytest.importorskip("pymysql")
    from kstreamlet.dev.mysql import MySQLStartError, _find_binary
    from kstreamlet.sinks.mysql.url import parse_mysql_url

    try:
        _find_binary(("mariadbd", "mysqld"), "KSTREAMLET_MARIADBD")
    except MySQLStartError as e:
        pytest.skip(str(e))
    env, cache = dev_env
    port = free_port()
    try:
        up = _cli(env, "dev", "mysql", "up", "--port", str(port))
        assert up.returncode == 0, up.stdout + up.stderr
        assert up.stdout.startswith("export KSTREAMLET_MYSQL_URL=mysql://") and f":{port}/" in up.stdout, up.stdout
        endpoint = parse_mysql_url(up.stdout.strip().split("=", 1)[1])
        conn = endpoint.connect(connect_timeout=5)
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        conn.close()
        other = _cli(env, "dev", "mysql", "up", "--port", str(port + 1))
        assert other.returncode == 2 and f"already running on port {port}" in other.stderr, other.stderr
        status = _cli(env, "dev", "mysql", "status")
        pid = int(json.loads(status.stdout)["pid"])
    finally:
        down = _cli(env, "dev", "mysql", "down", timeout=60)
        _stop_by_pid(cache, "dev-mysql.json")
    assert down.returncode == 0 and down.stdout.strip() == "stopped", down.stdout + down.stderr
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid)
    with pytest.raises(pymysql.err.OperationalError):
        endpoint.connect(connect_timeout=2)
