"""Packaging: what ``python -m build`` makes, installed into a fresh virtualenv and used from outside
the repository, the way a user's service uses kstreamlet.

* The sdist and the wheel are built once per test session from a copy of the sources (the checkout
  stays clean: setuptools writes ``build/`` and ``*.egg-info`` next to them); the wheel is built
  from the sdist, which ``python -m build`` does by default, so the sdist is proven complete too.
* The wheel goes into a fresh ``python -m venv`` (``--without-pip``; the suite's pip installs into
  it with ``--python``, which saves ensurepip's ~20 s) with the Docker image's default extras
  ``[state,mysql]``; dependencies come from the package index (pip's cache makes repeats fast).
* ``examples/letter-counts/app.py`` is copied into a temporary directory outside the repository;
  ``kstreamlet --version``, ``describe app:app``, ``topics create app:app`` and ``run app:app``
  are run from there with the venv's console script, the last one on the real broker of the
  suite, checking the committed output and a clean SIGTERM exit.

Skipped only when the package index cannot be reached (the reason says so); any other build or
install failure fails the test with pip's output.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
import uuid
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

try:
    import build  # noqa: F401  (run as `python -m build`)
except ImportError as e:  # a dev dependency: missing means the environment is not set up
    raise ImportError("the `build` package is a dev dependency: pip install -e '.[dev]'") from e

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
EXAMPLE_APP = ROOT / "examples" / "letter-counts" / "app.py"
#: The extras the Docker image installs by default (docker/Dockerfile KSTREAMLET_EXTRAS).
EXTRAS = "state,mysql"

_NETWORK_ERRORS = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
                   "Name or service not known", "Network is unreachable", "ConnectTimeoutError", "ReadTimeoutError",
                   "No matching distribution found", "Could not find a version that satisfies")


def _index_url() -> str:
    return os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/"


def _index_reachable() -> bool:
    try:
        with urllib.request.urlopen(_index_url().rstrip("/") + "/setuptools/", timeout=15) as r:
            return r.status == 200
    except OSError:
        return False


def _run_or_skip(cmd: list[str], what: str, timeout: float, **kw) -> subprocess.CompletedProcess[str]:
    """Run a step that needs the package index; skip (naming the index) only if it is unreachable."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        if not _index_reachable():
            pytest.skip(f"{what}: the package index {_index_url()} is unreachable (timed out after {timeout:.0f}s)")
        raise
    if p.returncode != 0:
        out = p.stdout + p.stderr
        if any(e in out for e in _NETWORK_ERRORS) and not _index_reachable():
            pytest.skip(f"{what}: the package index {_index_url()} is unreachable; pip said: {out[-500:]}")
        raise AssertionError(f"{what} failed (exit {p.returncode}):\n{out[-4000:]}")
    return p


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Path:
    """``python -m build`` (sdist, then the wheel from the sdist) of a copy of the sources."""
    src = tmp_path_factory.mktemp("src")
    for f in ("pyproject.toml", PYPROJECT["project"]["readme"]):
        shutil.copy2(ROOT / f, src / f)
    shutil.copytree(ROOT / "kstreamlet", src / "kstreamlet", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    _run_or_skip([sys.executable, "-m", "build", "--outdir", str(out), str(src)], "python -m build", timeout=300)
    return out


def _one(d: Path, pattern: str) -> Path:
    found = sorted(d.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {d}, found {[f.name for f in d.iterdir()]}"
    return found[0]


@pytest.fixture(scope="session")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh virtualenv with the built wheel and its ``[state,mysql]`` extras; returns its bin/."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    wheel = _one(dist, "kstreamlet-*.whl")
    _run_or_skip([sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install", "--no-compile",
                  "--disable-pip-version-check", f"{wheel}[{EXTRAS}]"], "pip install of the wheel", timeout=600)
    return root / "bin"


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory) -> Path:
    """A directory outside the repository holding only the user's app.py."""
    d = tmp_path_factory.mktemp("userapp")
    assert ROOT not in d.parents, f"{d} is inside the repository"
    shutil.copy2(EXAMPLE_APP, d / "app.py")
    return d


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that could make the repository's code importable."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KSTREAMLET_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return {**env, **extra}


def _kstreamlet(venv: Path, args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120
                ) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([str(venv / "kstreamlet"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, f"kstreamlet {' '.join(args)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


# --- the artifacts ---------------------------------------------------------------------------------


def test_wheel_holds_the_whole_package_its_data_entry_points_and_extras(dist):
    wheel = _one(dist, f"kstreamlet-{VERSION}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = f"kstreamlet-{VERSION}.dist-info"
        metadata = z.read(f"{info}/METADATA").decode()
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    package = {p.relative_to(ROOT).as_posix() for p in (ROOT / "kstreamlet").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    missing = sorted(package - names)
    assert not missing, f"package files missing from the wheel: {missing}"
    assert "kstreamlet/py.typed" in names, "py.typed (PEP 561) must ship: users type-check against kstreamlet"
    stray = sorted(n for n in names if not (n.startswith("kstreamlet/") or n.startswith(info + "/")))
    assert not stray, f"the wheel holds files outside the package: {stray}"
    assert "kstreamlet = kstreamlet.cli:main" in entry_points, entry_points
    assert "kstreamlet = kstreamlet.testing.pytest_plugin" in entry_points, "the pytest plugin's pytest11 entry point"
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    declared = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")}
    assert extras <= declared, f"extras {sorted(extras - declared)} are not in the wheel's metadata"
    for dep in ("rocksdict", "PyMySQL", "pyarrow"):
        assert any(line.startswith(f"Requires-Dist: {dep}") and "extra ==" in line for line in metadata.splitlines()), \
            f"{dep} must be an optional (extra) dependency of the wheel"
    assert "License-Expression: Apache-2.0" in metadata, "SPDX license expression (PEP 639)"


def test_sdist_holds_what_a_rebuild_needs(dist):
    sdist = _one(dist, f"kstreamlet-{VERSION}.tar.gz")
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"], "kstreamlet/py.typed", "kstreamlet/__init__.py",
              "kstreamlet/cli/__main__.py"}
    assert needed <= names, f"the sdist lacks {sorted(needed - names)}"
    assert not any(n.startswith(("tests/", "services/", "bench/")) for n in names), "the sdist is the library only"


# --- the installed package, from outside the repository ---------------------------------------------


def test_installed_cli_runs_from_outside_the_repository(venv, app_dir):
    env = _clean_env()
    where = subprocess.run([str(venv / "python"), "-c", "import kstreamlet, rocksdict, pymysql; print(kstreamlet.__file__)"],
                           cwd=app_dir, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv.parent), \
        f"kstreamlet was imported from {where.stdout.strip()}, not from the fresh venv {venv.parent}"
    version = _kstreamlet(venv, ["--version"], app_dir, env).stdout
    assert version.startswith(f"kstreamlet {VERSION} "), version
    text = _kstreamlet(venv, ["describe", "app:app"], app_dir, env).stdout
    assert "Source: source-0 (topics: [words])" in text and "stores: [counts-value]" in text, text
    assert "letter-counts-counts-value-changelog" in text, text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _committed(bootstrap: str, topic: str, expect: int, timeout: float) -> list[tuple[str, int]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.subscribe([topic])
    out: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                if m.error() is None:
                    out.append((m.key().decode(), int.from_bytes(m.value(), "big", signed=True)))
    finally:
        c.close()
    return out


def test_installed_app_runs_on_a_real_broker(venv, app_dir, kafka_bootstrap, kafka_admin, tmp_path):
    from kstreamlet.runtime.topics import delete_topics

    suffix = uuid.uuid4().hex[:8]
    app_id, in_topic, out_topic = f"pkg-letters-{suffix}", f"pkg-words-{suffix}", f"pkg-letter-counts-{suffix}"
    port = _free_port()
    env = _clean_env(KSTREAMLET_BOOTSTRAP_SERVERS=kafka_bootstrap, KSTREAMLET_APPLICATION_ID=app_id,
                     KSTREAMLET_STATE_DIR=str(tmp_path / "state"), KSTREAMLET_HTTP_PORT=str(port),
                     KSTREAMLET_SHUTDOWN_TIMEOUT="20", IN_TOPIC=in_topic, OUT_TOPIC=out_topic)
    words = ["apple", "avocado", "banana", "blueberry", "cherry", "apricot", "Beet", "carrot", "date", "almond"] * 3
    expected: dict[str, list[int]] = defaultdict(list)
    for w in words:
        expected[w[0].lower()].append(len(expected[w[0].lower()]) + 1)
    proc: subprocess.Popen[bytes] | None = None
    try:
        created = _kstreamlet(venv, ["topics", "create", "app:app", "-p", "2"], app_dir, env).stdout
        assert f"created\t{in_topic}" in created and f"created\t{out_topic}" in created, created
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for i, w in enumerate(words):
            producer.produce(in_topic, w.encode(), key=str(i).encode())
        assert producer.flush(30) == 0

        log = (tmp_path / "run.log").open("wb")
        proc = subprocess.Popen([str(venv / "kstreamlet"), "run", "app:app"], cwd=app_dir, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        seen = _committed(kafka_bootstrap, out_topic, len(words), timeout=90)
        by_letter: dict[str, list[int]] = defaultdict(list)
        for letter, count in seen:
            by_letter[letter].append(count)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        proc = None
        logs = (tmp_path / "run.log").read_text(errors="replace")
        assert {k: sorted(v) for k, v in by_letter.items()} == dict(expected), \
            f"committed counts differ from the input's (every letter's updates exactly 1..n):\n{dict(by_letter)}\nlog tail:\n{logs[-3000:]}"
        assert rc == 0, f"kstreamlet run exited {rc} on SIGTERM:\n{logs[-3000:]}"
        state_files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
        assert any(p.name == "CURRENT" for p in state_files), \
            f"expected RocksDB state (the [state] extra) under KSTREAMLET_STATE_DIR, saw {[p.name for p in state_files][:20]}"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(30)
        md = kafka_admin.list_topics(timeout=10)
        delete_topics(kafka_admin, [t for t in md.topics if t in (in_topic, out_topic) or t.startswith(app_id + "-")])
