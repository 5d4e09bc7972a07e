#!/usr/bin/env bash
# Idempotent install of the tools the Helm chart tests need (tests/unit/test_helm_chart.py):
#
#   - helm (pinned), built from source with `go install` through the Go module proxy.
#     Helm's release binaries live on get.helm.sh, which this project's machines cannot
#     reach; the Go module proxy can, and helm is a plain Go module.
#   - kubernetes-validate (pinned, PyPI) into the project's Python: it bundles the
#     Kubernetes JSON schemas per Kubernetes version, so rendered manifests are validated
#     fully offline. (kubeconform would fetch its schemas from GitHub at run time, which is
#     not reachable here.)
#
# The binary goes to $KSTREAMLET_BIN_DIR (default ~/.cache/kstreamlet/bin, which survives a
# re-created .venv) and is symlinked into .venv/bin when the venv exists. A second run with
# the same pinned version does nothing. First build: about 1-3 minutes on 2 cores.
#
# Usage: bash scripts/install-helm.sh        (prints the helm path on stdout)
# Env:   KSTREAMLET_BIN_DIR, PYTHON (default .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.21.4
# Kubernetes minor version helm assumes when no cluster is asked (`helm template`, `helm
# lint` deprecation checks). Helm's own Makefile derives it from the client-go it builds
# with (v0.36.x for helm v3.21 → Kubernetes 1.36); without these ldflags it would claim 1.20.
HELM_K8S_MAJOR=1
HELM_K8S_MINOR=36
KUBERNETES_VALIDATE_VERSION=1.37.0

BIN_DIR=${KSTREAMLET_BIN_DIR:-$HOME/.cache/kstreamlet/bin}
HELM=$BIN_DIR/helm

say() { echo "install-helm: $*" >&2; }

installed_version() {
  # `helm version` prints the version set by ldflags below; empty when absent or broken.
  [ -x "$HELM" ] && "$HELM" version --template '{{.Version}}' 2>/dev/null || true
}

if [ "$(installed_version)" = "$HELM_VERSION" ]; then
  say "helm $HELM_VERSION already at $HELM"
else
  if ! command -v go >/dev/null 2>&1; then
    say "Go is needed to build helm (go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION); install Go 1.21+ first"
    exit 1
  fi
  say "building helm $HELM_VERSION with $(go version | awk '{print $3}') (first time: a few minutes)"
  start=$(date +%s)
  mkdir -p "$BIN_DIR"
  # Build into a private GOBIN and move into place at the end, so an interrupted build
  # never leaves a half-written helm that a later run would take for installed.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  pkg=helm.sh/helm/v3
  ldflags="-s -w -X $pkg/internal/version.version=$HELM_VERSION"
  ldflags+=" -X $pkg/pkg/chartutil.k8sVersionMajor=$HELM_K8S_MAJOR -X $pkg/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR"
  ldflags+=" -X $pkg/pkg/lint/rules.k8sVersionMajor=$HELM_K8S_MAJOR -X $pkg/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR"
  # GOFLAGS from the environment (e.g. -mod=vendor for a checkout) must not leak into a
  # module-mode install; CGO off like helm's release builds (static binary, no C toolchain).
  GOBIN="$tmp" GOFLAGS= CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "$pkg/cmd/helm@$HELM_VERSION"
  mv -f "$tmp/helm" "$HELM"
  got=$(installed_version)
  if [ "$got" != "$HELM_VERSION" ]; then
    say "built helm reports version '$got', expected $HELM_VERSION"
    exit 1
  fi
  say "helm $HELM_VERSION installed at $HELM in $(( $(date +%s) - start ))s"
fi

# Expose it where `make` and the tests look first.
if [ -d .venv/bin ] && [ "$(readlink .venv/bin/helm 2>/dev/null || true)" != "$HELM" ]; then
  ln -sfn "$HELM" .venv/bin/helm
fi

# The offline manifest validator: normally installed by `pip install -e .[dev]`; ensured
# here too so the chart tests work in an environment made before it was a dev dependency.
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import kubernetes_validate" >/dev/null 2>&1; then
  say "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $PY"
  "$PY" -m pip install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

echo "$HELM"
