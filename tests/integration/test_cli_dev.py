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


def test_dev_kafka_up_secure_exports_a_sasl_ssl_login_that_works(dev_env):
    import shlex

    from confluent_kafka.admin import AdminClient

    from kstreamlet import Settings

    env, cache = dev_env
    port = free_port()
    pid = None
    try:
        up = _cli(env, "dev", "kafka", "up", "--port", str(port), "--secure")
        assert up.returncode == 0, up.stdout + up.stderr
        exported = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in up.stdout.splitlines())
        assert exported["KSTREAMLET_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert exported["KSTREAMLET_BOOTSTRAP_SERVERS"] != f"127.0.0.1:{port}"  # the SASL_SSL listener
        assert Path(exported["KSTREAMLET_SSL_CA_LOCATION"]).is_file()
        settings = Settings(application_id="dev-secure",
                            **{k.removeprefix("KSTREAMLET_").lower(): v for k, v in exported.items()})
        admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, **settings.security_config()})
        assert admin.list_topics(timeout=30).brokers
        # Asking for the plaintext-only broker while the secured one runs is a clear error.
        plain = _cli(env, "dev", "kafka", "up")
        assert plain.returncode == 2 and "SASL_SSL" in plain.stderr, plain.stderr
        status = _cli(env, "dev", "kafka", "status")
        pid = int(json.loads(status.stdout)["pid"])
    finally:
        down = _cli(env, "dev", "kafka", "down", timeout=90)
        _stop_by_pid(cache, "dev-kafka.json")
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 10
    while pid is not None and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pid is None or not _alive(pid)


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
