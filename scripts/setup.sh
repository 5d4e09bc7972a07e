#!/usr/bin/env bash
# Idempotent setup on a fresh Debian machine with Python 3.10+, Java 17+ and Maven (no Docker needed):
#   - OS packages: Java/Maven if missing, MariaDB server (the test suite's private MySQL)
#   - a virtualenv in .venv with kstreamlet[dev]
#   - Apache Kafka's jars resolved from Maven Central into ~/.cache/kstreamlet (cached)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then need_apt+=(mariadb-server); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    echo "setup: missing packages ${need_apt[*]} and not root; install them with apt-get" >&2; exit 1
  fi
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
  echo "setup: installing ${need_apt[*]} with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # Debian starts the packaged server; the tests run their own private one.
  $SUDO service mariadb stop >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Reinstall only when the dependency list changed (fast re-runs).
stamp=.venv/.kstreamlet-installed
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]"
  cp pyproject.toml "$stamp"
fi
.venv/bin/python -c "from kstreamlet.dev.kafka import ensure_kafka_jars; ensure_kafka_jars()"
# helm + offline Kubernetes schema validation for the chart tests (helm is built with Go, cached)
bash scripts/install-helm.sh >/dev/null
echo "setup: ok" >&2
