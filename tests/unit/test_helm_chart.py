"""The Helm chart in helm/kstreamlet: lint, render, validate offline, check the wiring.

Rendered manifests are validated against the Kubernetes JSON schemas bundled in the
``kubernetes-validate`` package (strict: unknown fields are errors), fully offline, for the
chart's minimum Kubernetes version and a current one. The ServiceMonitor is a Prometheus
Operator CRD without a bundled schema, so its structure is checked by hand.

Needs the ``helm`` binary (``bash scripts/install-helm.sh`` builds the pinned version);
without it this module is skipped, loudly.
"""

from __future__ import annotations

import base64

import json
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kstreamlet"
RELEASE = "words"
NAMESPACE = "streams"
FULLNAME = f"{RELEASE}-kstreamlet"
#: Kubernetes versions rendered and validated: the chart's kubeVersion floor and a current one.
KUBE_VERSIONS = ("1.27.0", "1.36.0")


def _find_helm() -> str | None:
    """$KSTREAMLET_HELM, then where scripts/install-helm.sh puts it, then PATH."""
    candidates = [os.environ.get("KSTREAMLET_HELM"), str(ROOT / ".venv" / "bin" / "helm"),
                  str(Path.home() / ".cache" / "kstreamlet" / "bin" / "helm"), shutil.which("helm")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    return None


HELM = _find_helm()
if HELM is None:
    _msg = ("HELM IS NOT INSTALLED: the Helm chart tests are SKIPPED. "
            "Run `bash scripts/install-helm.sh` (setup.sh should do it).")
    warnings.warn(_msg, stacklevel=1)
    pytest.skip(_msg, allow_module_level=True)

try:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
except ImportError as e:  # a dev dependency: a missing one is a setup bug, not a reason to skip
    raise ImportError("kubernetes-validate is missing: it is a dev dependency (pip install -e '.[dev]', "
                      "or bash scripts/install-helm.sh)") from e


# --- helpers -------------------------------------------------------------------------------------


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)


def render(*args: str, kube_version: str = KUBE_VERSIONS[-1], release: str = RELEASE) -> list[dict[str, Any]]:
    """``helm template`` → the list of manifests (documents that are not empty)."""
    r = helm("template", release, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube_version, *args)
    assert r.returncode == 0, f"helm template {' '.join(args)} failed:\n{r.stderr}"
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def render_error(*args: str) -> str:
    """``helm template`` that must fail; returns its error output."""
    r = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert r.returncode != 0, f"expected helm template {' '.join(args)} to fail, but it rendered:\n{r.stdout[:2000]}"
    return r.stderr


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")]
    assert len(found) == 1, f"expected one workload, found {kinds(docs)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cs = workload(docs)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in cs] == ["kstreamlet"], cs
    return cs[0]


def env_entry(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [e for e in container(docs)["env"] if e["name"] == name]
    assert len(found) == 1, f"expected env {name} once, saw {[e['name'] for e in container(docs)['env']]}"
    return found[0]


def validate_offline(docs: list[dict[str, Any]], kube_version: str) -> None:
    """Every manifest against the bundled Kubernetes schemas (strict); ServiceMonitor by hand."""
    problems = []
    for d in docs:
        what = f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
        if d.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            (check_prometheus_rule if d.get("kind") == "PrometheusRule" else check_service_monitor)(d, docs)
            continue
        try:
            kubernetes_validate.validate(d, kube_version, strict=True)
        except ValidationError as e:
            problems.append(f"{what}: at {'.'.join(map(str, e.path)) or '(root)'}: {e.message}")
        except SchemaNotFoundError as e:
            problems.append(f"{what}: {e.message}")
    assert not problems, f"manifests invalid for Kubernetes {kube_version}:\n" + "\n".join(problems)


SERVICE_MONITOR_SPEC_FIELDS = {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels",
                               "podTargetLabels", "sampleLimit", "attachMetadata"}
ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings",
                   "metricRelabelings", "tlsConfig", "bearerTokenSecret", "params"}


def check_service_monitor(sm: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    """Structure of a monitoring.coreos.com/v1 ServiceMonitor, and that it matches the metrics Service."""
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor", sm
    assert set(sm) <= {"apiVersion", "kind", "metadata", "spec"}, f"unexpected top-level fields {set(sm)}"
    assert sm["metadata"]["name"] and sm["metadata"]["namespace"], sm["metadata"]
    spec = sm["spec"]
    assert set(spec) <= SERVICE_MONITOR_SPEC_FIELDS, f"unknown ServiceMonitor spec fields {set(spec) - SERVICE_MONITOR_SPEC_FIELDS}"
    svc = one(docs, "Service", f"{FULLNAME}-metrics")
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= svc["metadata"]["labels"].items(), \
        f"ServiceMonitor selector {selector} does not match the metrics Service labels {svc['metadata']['labels']}"
    headless = [d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None"]
    for h in headless:
        assert not selector.items() <= h["metadata"]["labels"].items(), \
            "ServiceMonitor must not also select the headless Service (every pod would be scraped twice)"
    assert spec["namespaceSelector"]["matchNames"] == [NAMESPACE], spec["namespaceSelector"]
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    assert spec["endpoints"], "ServiceMonitor without endpoints"
    for ep in spec["endpoints"]:
        assert set(ep) <= ENDPOINT_FIELDS, f"unknown endpoint fields {set(ep) - ENDPOINT_FIELDS}"
        assert ep["port"] in svc_ports, f"endpoint port {ep['port']!r} is not a metrics Service port {svc_ports}"
        assert ep["path"] == "/metrics", ep
        for k in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"[0-9]+(ms|s|m|h)", ep[k]), f"{k}={ep[k]!r} is not a Prometheus duration"


PROMETHEUS_RULE_FIELDS = {"alert", "expr", "for", "labels", "annotations", "record", "keep_firing_for"}


def check_prometheus_rule(rule: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    """Structure of a monitoring.coreos.com/v1 PrometheusRule; every metric it queries is kstreamlet's."""
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule", rule
    assert set(rule) <= {"apiVersion", "kind", "metadata", "spec"}, f"unexpected top-level fields {set(rule)}"
    assert rule["metadata"]["name"] and rule["metadata"]["namespace"], rule["metadata"]
    assert set(rule["spec"]) == {"groups"} and rule["spec"]["groups"], rule["spec"]
    from tests.unit.test_metrics import _registered_metric_names

    names = _registered_metric_names()
    for g in rule["spec"]["groups"]:
        assert set(g) <= {"name", "interval", "rules", "limit"} and g["name"], g
        for r in g["rules"]:
            assert set(r) <= PROMETHEUS_RULE_FIELDS, f"unknown rule fields {set(r) - PROMETHEUS_RULE_FIELDS}"
            assert r["alert"] and isinstance(r["expr"], str), r
            assert re.fullmatch(r"[0-9]+(ms|s|m|h)", r["for"]), r["for"]
            assert r["expr"].count("(") == r["expr"].count(")") and r["expr"].count("{") == r["expr"].count("}"), r["expr"]
            used = set(re.findall(r"\bkstreamlet_[a-z0-9_]+", r["expr"]))
            assert used and used <= names, f"{r['alert']} queries metrics kstreamlet does not export: {used - names}"
            for text in r["annotations"].values():
                assert "{{ $" in text or "$labels" not in text, text


ALL_FEATURES = (
    "--set", "autoscaling.enabled=true",
    "--set", "autoscaling.targetMemoryUtilizationPercentage=80",
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "metrics.serviceMonitor.labels.release=prometheus",
    "--set", "metrics.prometheusRule.enabled=true",
    "--set", "metrics.grafanaDashboard.enabled=true",
    "--set", "kafka.sasl.enabled=true",
    "--set", "kafka.sasl.existingSecret=kafka-credentials",
    "--set-json", 'kafka.config={"ssl.ca.location": "/etc/kafka/ca.crt"}',
    "--set", "mysql.existingSecret=mysql-url",
    "--set", "workers=3",
    "--set", "config.application_id=words",
    "--set", "config.commit_interval=0.5",
    "--set-json", 'extraEnv=[{"name": "WORDS_TOPIC", "value": "words"}]',
    "--set", "persistence.storageClassName=fast-ssd",
    "--set-json", 'updateStrategy={"type": "RollingUpdate"}',
)


#: The topic-creation Job with listed topics and the app's own, plus non-default placement.
TOPICS_FEATURES = (
    "--set", "topics.create=true",
    "--set-json", 'topics.list=[{"name": "lines", "partitions": 12, "replicationFactor": 3, '
                  '"config": {"retention.ms": "604800000", "cleanup.policy": "delete"}}, {"name": "counts"}]',
    "--set-json", 'topics.config={"min.insync.replicas": 2}',
    "--set", "topics.partitions=8",
    "--set", "topics.replicationFactor=3",
    "--set-json", 'extraEnv=[{"name": "IN_TOPIC", "value": "lines"}]',
    "--set-json", 'envFrom=[{"secretRef": {"name": "app-env"}}]',
    "--set-json", 'imagePullSecrets=[{"name": "regcred"}]',
    "--set", "podAntiAffinityPreset.type=hard",
    "--set-json", 'affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": '
                  '[{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["streams"]}]}]}}}',
)


# --- lint and schema validity ---------------------------------------------------------------------


def test_helm_lint_is_clean_in_strict_mode():
    for args in ((), ("--set", "kind=Deployment"), ALL_FEATURES, TOPICS_FEATURES):
        r = helm("lint", str(CHART), "--strict", *args)
        assert r.returncode == 0, f"helm lint --strict {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize(("mode", "args"), [
    ("statefulset-defaults", ()),
    ("deployment", ("--set", "kind=Deployment", "--set", "emptyDirSizeLimit=5Gi")),
    ("statefulset-all-features", ALL_FEATURES),
    ("deployment-all-features", ("--set", "kind=Deployment", *ALL_FEATURES)),
    ("config-secret-and-pdb-min-available", (
        "--set", "kafka.configSecret.existingSecret=kafka-json",
        "--set", "podDisruptionBudget.minAvailable=50%", "--set", "podDisruptionBudget.maxUnavailable=null")),
    ("no-optional-objects", (
        "--set", "podDisruptionBudget.enabled=false", "--set", "metrics.service.enabled=false",
        "--set", "serviceAccount.create=false", "--set", "metrics.podAnnotations=false",
        "--set", "podAntiAffinityPreset.type=none", "--set", "topologySpread.enabled=false")),
    ("topics-job-and-placement", TOPICS_FEATURES),
    ("deployment-topics-job-all-features", ("--set", "kind=Deployment", *ALL_FEATURES, *TOPICS_FEATURES)),
])
def test_rendered_manifests_validate_against_the_kubernetes_schema(mode, args, kube_version):
    docs = render(*args, kube_version=kube_version)
    assert docs, f"{mode}: nothing rendered"
    validate_offline(docs, kube_version)


def test_values_schema_is_a_valid_draft07_schema_and_accepts_the_defaults():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#", schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(defaults)]
    assert not errors, f"values.yaml does not satisfy values.schema.json: {errors}"
    missing = sorted(set(defaults) - set(schema["properties"]))
    assert not missing, f"values without a schema entry (they would be rejected): {missing}"


# --- wiring ---------------------------------------------------------------------------------------


def test_default_kind_is_a_statefulset_with_headless_and_metrics_services():
    docs = render()
    assert kinds(docs) == ["ConfigMap", "PodDisruptionBudget", "Secret", "Service", "Service", "ServiceAccount",
                           "StatefulSet"], kinds(docs)
    sts = one(docs, "StatefulSet", FULLNAME)
    headless = one(docs, "Service", f"{FULLNAME}-headless")
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"], \
        f"StatefulSet serviceName {sts['spec']['serviceName']!r} is not the headless Service"
    assert headless["spec"]["clusterIP"] == "None", headless["spec"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel", "members must start together (readiness depends on the group)"
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    for svc in (headless, one(docs, "Service", f"{FULLNAME}-metrics")):
        assert svc["spec"]["selector"].items() <= pod_labels.items(), \
            f"{svc['metadata']['name']} selector {svc['spec']['selector']} does not select the pods {pod_labels}"
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_instance_id_is_the_pod_name_from_the_downward_api():
    for args in ((), ("--set", "kind=Deployment")):
        entry = env_entry(render(*args), "KSTREAMLET_INSTANCE_ID")
        assert entry.get("valueFrom") == {"fieldRef": {"fieldPath": "metadata.name"}}, \
            f"{args}: expected KSTREAMLET_INSTANCE_ID from metadata.name, saw {entry}"


def test_the_query_url_is_the_pods_stable_dns_name_through_the_headless_service(monkeypatch):
    """Interactive queries: other pods forward a key's query to KSTREAMLET_ADVERTISED_URL, the pod's
    DNS name <pod>.<headless service>.<namespace>.svc on the HTTP port; a Deployment's pod IP."""
    from kstreamlet.config import load_settings

    docs = render("--set", "httpPort=9090", "--set", "config.application_id=words")
    headless = one(docs, "Service", f"{FULLNAME}-headless")
    assert workload(docs)["spec"]["serviceName"] == headless["metadata"]["name"]
    assert 9090 in [p["port"] for p in headless["spec"]["ports"]]
    env = _kubelet_env(docs, f"{FULLNAME}-2", {})
    url = f"http://{FULLNAME}-2.{FULLNAME}-headless.{NAMESPACE}.svc:9090"
    assert env["KSTREAMLET_ADVERTISED_URL"] == url
    for k in [k for k in os.environ if k.startswith("KSTREAMLET_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert load_settings().advertised_url == url
    names = [e["name"] for e in container(docs)["env"]]
    assert names.index("KSTREAMLET_INSTANCE_ID") < names.index("KSTREAMLET_ADVERTISED_URL"), \
        "$(KSTREAMLET_INSTANCE_ID) is expanded only when defined before"
    deployment = container(render("--set", "kind=Deployment"))["env"]
    by_name = {e["name"]: e for e in deployment}
    assert by_name["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert by_name["KSTREAMLET_ADVERTISED_URL"]["value"] == "http://$(POD_IP):8080"
    assert [e["name"] for e in deployment].index("POD_IP") < [e["name"] for e in deployment].index(
        "KSTREAMLET_ADVERTISED_URL")


def test_static_membership_is_on_for_a_statefulset_and_off_for_a_deployment():
    cases = (((), "true"), (("--set", "staticMembership=false"), "false"), (("--set", "kind=Deployment"), "false"),
             (("--set", "kind=Deployment", "--set", "staticMembership=true"), "false"))
    for args, expected in cases:
        entry = env_entry(render(*args), "KSTREAMLET_STATIC_MEMBERSHIP")
        assert entry.get("value") == expected, f"{args}: expected KSTREAMLET_STATIC_MEMBERSHIP={expected}, saw {entry}"


def test_statefulset_mounts_a_pvc_per_pod_at_the_state_dir():
    docs = render("--set", "stateDir=/data/state", "--set", "persistence.size=20Gi",
                  "--set", "persistence.storageClassName=fast-ssd")
    sts = one(docs, "StatefulSet")
    claims = sts["spec"]["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == ["state"], claims
    assert claims[0]["spec"]["resources"]["requests"]["storage"] == "20Gi", claims[0]["spec"]
    assert claims[0]["spec"]["storageClassName"] == "fast-ssd", claims[0]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in container(docs)["volumeMounts"]}
    assert mounts.get("state") == "/data/state", f"expected the claim mounted at /data/state, saw {mounts}"
    assert env_entry(docs, "KSTREAMLET_STATE_DIR")["value"] == "/data/state", "KSTREAMLET_STATE_DIR must be the mount path"
    volumes = {v["name"] for v in sts["spec"]["template"]["spec"].get("volumes", [])}
    assert "state" not in volumes, f"a pod volume named state would shadow the claim: {volumes}"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def test_deployment_keeps_state_in_an_empty_dir_and_has_no_pvc_or_headless_service():
    docs = render("--set", "kind=Deployment")
    dep = one(docs, "Deployment", FULLNAME)
    assert "volumeClaimTemplates" not in dep["spec"] and "serviceName" not in dep["spec"], dep["spec"].keys()
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}, volumes.get("state")
    mounts = {m["name"]: m["mountPath"] for m in container(docs)["volumeMounts"]}
    assert mounts["state"] == env_entry(docs, "KSTREAMLET_STATE_DIR")["value"] == "/var/lib/kstreamlet/state", mounts
    assert not [d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None"], \
        "a Deployment needs no headless Service"


def test_probes_hit_healthz_and_readyz_on_the_http_port():
    docs = render("--set", "httpPort=9100")
    c = container(docs)
    expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    seen = {p: c[p]["httpGet"]["path"] for p in expected}
    assert seen == expected, f"expected probe paths {expected}, saw {seen}"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 9100}, f"expected one port http=9100, saw {ports}"
    for p in expected:
        assert c[p]["httpGet"]["port"] == "http", f"{p} must use the named http port, saw {c[p]['httpGet']['port']!r}"
    assert env_entry(docs, "KSTREAMLET_HTTP_PORT")["value"] == "9100"
    annotations = workload(docs)["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"], annotations["prometheus.io/path"]) \
        == ("true", "9100", "/metrics"), annotations


@pytest.mark.parametrize(("timeout", "margin"), [(30, 15), (120, 5)])
def test_grace_period_exceeds_the_shutdown_timeout_given_to_kstreamlet(timeout, margin):
    docs = render("--set", f"shutdownTimeoutSeconds={timeout}", "--set", f"terminationGraceMarginSeconds={margin}")
    grace = workload(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == timeout + margin, f"expected terminationGracePeriodSeconds {timeout}+{margin}, saw {grace}"
    assert env_entry(docs, "KSTREAMLET_SHUTDOWN_TIMEOUT")["value"] == str(timeout)
    assert grace > timeout


def test_replicas_are_set_unless_the_hpa_owns_them():
    sts = one(render("--set", "replicas=5"), "StatefulSet")
    assert sts["spec"]["replicas"] == 5, f"expected replicas 5, saw {sts['spec'].get('replicas')}"
    assert one(render("--set", "replicas=0"), "StatefulSet")["spec"]["replicas"] == 0, "replicas=0 (paused) is valid"
    for kind in ("StatefulSet", "Deployment"):
        docs = render("--set", f"kind={kind}", "--set", "autoscaling.enabled=true",
                      "--set", "autoscaling.minReplicas=3", "--set", "autoscaling.maxReplicas=9")
        assert "replicas" not in workload(docs)["spec"], f"{kind}: replicas must be left to the HPA"
        hpa = one(docs, "HorizontalPodAutoscaler", FULLNAME)
        target = hpa["spec"]["scaleTargetRef"]
        assert target == {"apiVersion": "apps/v1", "kind": kind, "name": FULLNAME}, f"HPA targets {target}"
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9), hpa["spec"]


def test_app_and_workers_become_the_run_arguments_with_one_port_per_worker():
    docs = render("--set", "app=myservice.pipeline:app", "--set", "workers=3")
    c = container(docs)
    assert c["args"] == ["myservice.pipeline:app", "--workers", "3"], f"saw args {c['args']}"
    assert "command" not in c, "the image's ENTRYPOINT (kstreamlet run) must be kept"
    ports = [(p["name"], p["containerPort"]) for p in c["ports"]]
    assert ports == [("http", 8080), ("http-w1", 8081), ("http-w2", 8082)], f"worker i serves on 8080+i; saw {ports}"
    svc_ports = [(p["name"], p["port"]) for p in one(docs, "Service", f"{FULLNAME}-metrics")["spec"]["ports"]]
    assert svc_ports == ports, f"metrics Service must expose every worker's port; saw {svc_ports}"


def test_config_values_render_into_the_configmap_read_by_envfrom():
    docs = render("--set", "config.application_id=words", "--set", "config.commit_interval=0.25",
                  "--set", "config.error_policy=skip", "--set", "config.poll_batch_size=500",
                  "--set-json", "config.rocksdb_block_cache_mb=2000000", "--set", "config.dlq_topic=")
    cm = one(docs, "ConfigMap", FULLNAME)
    assert cm["data"] == {
        "KSTREAMLET_APPLICATION_ID": "words",
        "KSTREAMLET_BOOTSTRAP_SERVERS": "kafka:9092",
        "KSTREAMLET_PROCESSING_GUARANTEE": "exactly_once",
        "KSTREAMLET_COMMIT_INTERVAL": "0.25",
        "KSTREAMLET_ERROR_POLICY": "skip",
        "KSTREAMLET_POLL_BATCH_SIZE": "500",
        "KSTREAMLET_ROCKSDB_BLOCK_CACHE_MB": "2000000",
    }, f"unexpected ConfigMap data (null/empty values must be left out, integers not in 1e+06 form): {cm['data']}"
    assert {"configMapRef": {"name": FULLNAME}} in container(docs)["envFrom"], container(docs)["envFrom"]
    checksum = workload(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    other = workload(render("--set", "config.application_id=other"))["spec"]["template"]["metadata"]["annotations"]
    assert other["checksum/config"] != checksum, "a settings change must change the pod template (rolling restart)"


def _kubelet_env(docs: list[dict[str, Any]], pod_name: str, secrets: dict[str, dict[str, str]],
                 c: dict[str, Any] | None = None) -> dict[str, str]:
    """The environment of container ``c`` (default: the workload's) as the kubelet would build it
    (envFrom, then env with $(VAR) expansion)."""
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    # The chart's own Secrets (the query token), besides the existing ones the test stands in for.
    secrets = {**{d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
                  for d in docs if d["kind"] == "Secret"}, **secrets}
    c = c or container(docs)
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            env.update(configmaps[src["configMapRef"]["name"]])
        else:
            env.update(secrets[src["secretRef"]["name"]])
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), e["value"])
        elif "fieldRef" in e["valueFrom"]:
            assert e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", e
            env[e["name"]] = pod_name
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def test_pod_environment_loads_into_the_intended_kstreamlet_settings(monkeypatch):
    """Chart and Settings agree: the env a pod gets is accepted by load_settings and means what the values say."""
    from kstreamlet.config import load_settings

    docs = render(*ALL_FEATURES, "--set", "shutdownTimeoutSeconds=50", "--set", "stateDir=/data/state")
    secrets = {"kafka-credentials": {"username": "svc-words", "password": "s3cr3t-p@ss"},
               "mysql-url": {"url": "mysql://u:p@db:3306/app"}}
    env = _kubelet_env(docs, f"{FULLNAME}-1", secrets)
    for k in [k for k in os.environ if k.startswith("KSTREAMLET_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    seen = {"application_id": s.application_id, "instance_id": s.instance_id, "http_port": s.http_port,
            "shutdown_timeout": s.shutdown_timeout, "state_dir": s.state_dir, "commit_interval": s.commit_interval,
            "bootstrap_servers": s.bootstrap_servers, "kafka_config": s.kafka_config,
            "security": s.security_config()}
    expected = {"application_id": "words", "instance_id": f"{FULLNAME}-1", "http_port": 8080,
                "shutdown_timeout": 50.0, "state_dir": "/data/state", "commit_interval": 0.5,
                "bootstrap_servers": "kafka:9092",
                "kafka_config": {"ssl.ca.location": "/etc/kafka/ca.crt"},
                "security": {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
                             "sasl.username": "svc-words", "sasl.password": "s3cr3t-p@ss"}}
    assert seen == expected, f"settings from the pod env differ:\nexpected {expected}\nseen     {seen}"
    assert env["KSTREAMLET_MYSQL_URL"] == "mysql://u:p@db:3306/app"
    assert env["WORDS_TOPIC"] == "words", "extraEnv must reach the container"


def test_chart_settings_take_effect_for_an_app_that_sets_them_in_code(monkeypatch):
    """The README's first example sets application_id, processing_guarantee and commit_interval in
    code; the chart's config.* values (environment) must still win, and the start-up report says so."""
    from kstreamlet import App, serdes

    docs = render("--set", "config.application_id=words", "--set", "config.commit_interval=0.5",
                  "--set", "config.processing_guarantee=at_least_once")
    env = _kubelet_env(docs, f"{FULLNAME}-0", {})
    for k in [k for k in os.environ if k.startswith("KSTREAMLET_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    app = App(application_id="upper", processing_guarantee="exactly_once", commit_interval=0.1)
    app.stream("lines", value_serde=serdes.STR).map(str.upper).to("upper-lines")
    s = app.settings
    assert (s.application_id, s.processing_guarantee, s.commit_interval, s.instance_id) == \
        ("words", "at_least_once", 0.5, f"{FULLNAME}-0")
    report = s.report()["settings"]
    assert report["commit_interval"] == {"value": 0.5, "source": "env KSTREAMLET_COMMIT_INTERVAL", "overrides_code": 0.1}
    assert "ignored_env" not in s.report(), "the chart renders no variable kstreamlet does not know"


def test_kafka_config_from_a_whole_secret_or_plain_values():
    docs = render("--set", "kafka.configSecret.existingSecret=kafka-json", "--set", "kafka.configSecret.key=cfg.json")
    assert env_entry(docs, "KSTREAMLET_KAFKA_CONFIG")["valueFrom"] == \
        {"secretKeyRef": {"name": "kafka-json", "key": "cfg.json"}}
    assert "KSTREAMLET_KAFKA_CONFIG" not in one(docs, "ConfigMap")["data"]
    docs = render("--set-json", 'kafka.config={"security.protocol": "SSL"}')
    assert json.loads(one(docs, "ConfigMap")["data"]["KSTREAMLET_KAFKA_CONFIG"]) == {"security.protocol": "SSL"}
    assert not [e for e in container(docs)["env"] if e["name"] == "KSTREAMLET_KAFKA_CONFIG"], \
        "plain kafka.config goes through the ConfigMap only"
    names = [e["name"] for e in container(render())["env"]]
    assert not {"KSTREAMLET_KAFKA_CONFIG", "KSTREAMLET_SASL_PASSWORD", "KSTREAMLET_SSL_CA_LOCATION",
                "KSTREAMLET_MYSQL_URL"} & set(names), \
        f"no Kafka/MySQL secrets by default, saw {names}"


def test_sasl_and_tls_come_from_secrets_as_security_settings(monkeypatch, tmp_path):
    """The password only through a secretKeyRef (never in the ConfigMap or a literal value); the CA
    and client certificate Secrets mounted read-only into the pods and the topic Job, their paths
    the ssl_* settings; the pod env loads into exactly those settings."""
    from kstreamlet.config import load_settings

    docs = render("--set", "kafka.sasl.enabled=true", "--set", "kafka.sasl.existingSecret=kafka-credentials",
                  "--set", "kafka.tls.caSecret=kafka-ca", "--set", "kafka.tls.clientCertSecret=kafka-client",
                  "--set", "config.application_id=words", *TOPICS_FEATURES)
    text = json.dumps(docs)
    assert "s3cr3t" not in text
    assert env_entry(docs, "KSTREAMLET_SASL_PASSWORD")["valueFrom"] == \
        {"secretKeyRef": {"name": "kafka-credentials", "key": "password"}}
    assert not [k for k in one(docs, "ConfigMap")["data"] if "SASL" in k or "SSL" in k]
    for c, spec in ((container(docs), workload(docs)["spec"]["template"]["spec"]),
                    *((c, topics_job(docs)["spec"]["template"]["spec"]) for c in job_steps(topics_job(docs)))):
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["kafka-ca"]["mountPath"] == "/etc/kstreamlet/kafka-ca" and mounts["kafka-ca"]["readOnly"]
        assert mounts["kafka-client-cert"]["mountPath"] == "/etc/kstreamlet/kafka-client"
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols["kafka-ca"]["secret"]["secretName"] == "kafka-ca"
        assert vols["kafka-client-cert"]["secret"]["secretName"] == "kafka-client"
    # The kubelet's view, with the mounted files put where the pod would see them.
    env = _kubelet_env(docs, f"{FULLNAME}-0", {"kafka-credentials": {"username": "svc", "password": "s3cr3t"},
                                              "app-env": {}})
    files = {}
    for k in ("KSTREAMLET_SSL_CA_LOCATION", "KSTREAMLET_SSL_CERTIFICATE_LOCATION", "KSTREAMLET_SSL_KEY_LOCATION"):
        local = tmp_path / Path(env[k]).name
        local.write_text("pem")
        files[k] = env[k]
        env[k] = str(local)
    assert files == {"KSTREAMLET_SSL_CA_LOCATION": "/etc/kstreamlet/kafka-ca/ca.crt",
                     "KSTREAMLET_SSL_CERTIFICATE_LOCATION": "/etc/kstreamlet/kafka-client/tls.crt",
                     "KSTREAMLET_SSL_KEY_LOCATION": "/etc/kstreamlet/kafka-client/tls.key"}
    for k in [k for k in os.environ if k.startswith("KSTREAMLET_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert (s.security_protocol, s.sasl_mechanism, s.sasl_username) == ("SASL_SSL", "SCRAM-SHA-512", "svc")
    assert s.sasl_password is not None and s.sasl_password.get_secret_value() == "s3cr3t"
    assert s.report()["settings"]["sasl_password"]["value"] == "***"
    # TLS without SASL: security_protocol SSL.
    docs = render("--set", "kafka.tls.caSecret=kafka-ca")
    assert env_entry(docs, "KSTREAMLET_SECURITY_PROTOCOL")["value"] == "SSL"


def test_pod_runs_non_root_with_a_read_only_root_filesystem():
    spec = workload(render())["spec"]["template"]["spec"]
    psc, csc = spec["securityContext"], spec["containers"][0]["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001 and psc["fsGroup"] == 10001, psc
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False, csc
    assert csc["capabilities"]["drop"] == ["ALL"], csc
    assert spec["automountServiceAccountToken"] is False


def test_pdb_selects_the_pods_and_lets_unready_ones_be_evicted():
    docs = render()
    pdb = one(docs, "PodDisruptionBudget", FULLNAME)
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"], pdb["spec"]
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == workload(docs)["spec"]["selector"]["matchLabels"]


def test_service_monitor_scrapes_every_worker_port_of_the_metrics_service():
    docs = render("--set", "metrics.serviceMonitor.enabled=true", "--set", "workers=2",
                  "--set", "metrics.serviceMonitor.labels.release=prom")
    sm = one(docs, "ServiceMonitor", FULLNAME)
    check_service_monitor(sm, docs)
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["http", "http-w1"], sm["spec"]["endpoints"]
    assert sm["metadata"]["labels"]["release"] == "prom", sm["metadata"]["labels"]
    assert sm["metadata"]["namespace"] == NAMESPACE
    assert "ServiceMonitor" not in kinds(render()), "ServiceMonitor is off by default (needs the operator's CRD)"


def test_grafana_dashboard_configmap_carries_the_dashboard_for_the_sidecar():
    assert not [d for d in render() if d["metadata"]["name"].endswith("-dashboard")], "off by default"
    docs = render("--set", "metrics.grafanaDashboard.enabled=true", "--set", "metrics.grafanaDashboard.namespace=monitoring",
                  "--set", "metrics.grafanaDashboard.annotations.grafana_folder=Streams")
    cm = one(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", cm["metadata"]["labels"]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Streams"}
    shipped = json.loads(cm["data"]["kstreamlet.json"])
    assert shipped == json.loads((CHART / "dashboards" / "kstreamlet.json").read_text()), "the ConfigMap holds the chart's file"
    validate_offline(docs, KUBE_VERSIONS[-1])


def test_prometheus_rule_alerts_on_lag_stuck_checkpoints_and_dlq_records():
    assert "PrometheusRule" not in kinds(render()), "off by default (needs the operator's CRD)"
    docs = render("--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.prometheusRule.labels.release=prom",
                  "--set", "metrics.prometheusRule.lagGrowingMinutes=15", "--set", "metrics.prometheusRule.checkpointStuckIntervals=20")
    rule = one(docs, "PrometheusRule", FULLNAME)
    check_prometheus_rule(rule, docs)
    assert rule["metadata"]["labels"]["release"] == "prom"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"KstreamletConsumerLagGrowing", "KstreamletCheckpointsStuck", "KstreamletDeadLetterRecords"}
    lag, stuck, dlq = (alerts[a] for a in ("KstreamletConsumerLagGrowing", "KstreamletCheckpointsStuck", "KstreamletDeadLetterRecords"))
    assert lag["for"] == "15m" and "[15m]" in lag["expr"] and "kstreamlet_consumer_lag_records" in lag["expr"]
    assert "20 * kstreamlet_commit_interval_seconds" in stuck["expr"]
    assert "kstreamlet_last_checkpoint_timestamp_seconds" in stuck["expr"]
    assert "rate(kstreamlet_dlq_records_total" in dlq["expr"] and "error_type" in dlq["expr"]
    selector = f'namespace="{NAMESPACE}", service="{FULLNAME}-metrics"'
    for r in alerts.values():
        assert r["expr"].count("kstreamlet_") == r["expr"].count("{" + selector + "}"), \
            f"every series of {r['alert']} must be selected by the release's labels: {r['expr']}"
    custom = one(render("--set", "metrics.prometheusRule.enabled=true", "--set-string",
                        'metrics.prometheusRule.selector=job="words"'), "PrometheusRule")
    assert all('{job="words"}' in r["expr"] for g in custom["spec"]["groups"] for r in g["rules"])


def test_long_release_names_stay_within_kubernetes_name_limits():
    release = ("a-very-long-release-name-" + "x" * 53)[:53]  # helm's own limit for release names
    docs = render(release=release)
    sts = one(docs, "StatefulSet")
    assert len(sts["metadata"]["name"]) <= 52, f"StatefulSet name {sts['metadata']['name']!r} > 52 characters"
    for d in docs:
        assert len(d["metadata"]["name"]) <= 63, f"{d['kind']} name {d['metadata']['name']!r} > 63 characters"
    validate_offline(docs, KUBE_VERSIONS[-1])


# --- placement: anti-affinity and topology spread ----------------------------------------------------


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return workload(docs)["spec"]["template"]["spec"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("kind", ["StatefulSet", "Deployment"])
def test_default_pods_prefer_distinct_nodes_and_spread_over_zones(kind):
    docs = render("--set", f"kind={kind}")
    spec = pod_spec(docs)
    pod_labels = workload(docs)["spec"]["template"]["metadata"]["labels"]
    selector = workload(docs)["spec"]["selector"]["matchLabels"]
    assert set(spec["affinity"]) == {"podAntiAffinity"}, spec["affinity"]
    (pref,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in spec["affinity"]["podAntiAffinity"], \
        "the default is a preference: fewer nodes than replicas must still schedule every pod"
    assert pref["weight"] == 100 and pref["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname", pref
    term_selector = pref["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert term_selector == selector and selects(term_selector, pod_labels), \
        f"anti-affinity must select this app's pods (and only them): {term_selector} vs {pod_labels}"
    (spread,) = spec["topologySpreadConstraints"]
    assert spread == {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
                      "labelSelector": {"matchLabels": selector}}, spread
    other = pod_spec(render("--set", f"kind={kind}", release="other"))
    other_selector = other["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert not selects(other_selector["podAffinityTerm"]["labelSelector"]["matchLabels"], pod_labels), \
        "another release's pods must not repel these"


def test_anti_affinity_can_be_hard_disabled_or_replaced_and_other_affinity_is_kept():
    hard = pod_spec(render("--set", "podAntiAffinityPreset.type=hard",
                           "--set", "podAntiAffinityPreset.topologyKey=topology.kubernetes.io/zone"))["affinity"]
    (req,) = hard["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert req["topologyKey"] == "topology.kubernetes.io/zone" and "preferredDuringSchedulingIgnoredDuringExecution" \
        not in hard["podAntiAffinity"], hard
    assert "affinity" not in pod_spec(render("--set", "podAntiAffinityPreset.type=none")), "type=none: no default"
    node_affinity = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["streams"]}]}]}}
    kept = pod_spec(render("--set-json", "affinity=" + json.dumps({"nodeAffinity": node_affinity})))["affinity"]
    assert kept["nodeAffinity"] == node_affinity and "podAntiAffinity" in kept, \
        f"a node affinity of the user's must not drop the default anti-affinity: {kept}"
    own = {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5, "podAffinityTerm": {
        "topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"team": "x"}}}}]}
    replaced = pod_spec(render("--set-json", "affinity=" + json.dumps({"podAntiAffinity": own})))["affinity"]
    assert replaced == {"podAntiAffinity": own}, f"the user's podAntiAffinity replaces the default: {replaced}"


def test_topology_spread_can_be_tuned_replaced_or_disabled():
    (tuned,) = pod_spec(render("--set", "topologySpread.maxSkew=2",
                               "--set", "topologySpread.whenUnsatisfiable=DoNotSchedule"))["topologySpreadConstraints"]
    assert (tuned["maxSkew"], tuned["whenUnsatisfiable"]) == (2, "DoNotSchedule"), tuned
    own = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE}}}]
    assert pod_spec(render("--set-json", "topologySpreadConstraints=" + json.dumps(own)))["topologySpreadConstraints"] == own
    assert "topologySpreadConstraints" not in pod_spec(render("--set", "topologySpread.enabled=false"))


# --- the topic-creation Job ----------------------------------------------------------------------------


def topics_job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Job", f"{FULLNAME}-topics")


def job_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The Job's containers in the order they run: init containers, then the container."""
    spec = job["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_no_topics_job_by_default():
    assert "Job" not in kinds(render()), "topic creation is opt-in (topics.create)"


def test_topics_job_is_a_pre_install_pre_upgrade_hook_running_kstreamlet_topics_create():
    from kstreamlet.cli import build_parser

    docs = render(*TOPICS_FEATURES, "--set", "app=myservice.pipeline:app")
    job = topics_job(docs)
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-install,pre-upgrade", ann
    assert set(ann["helm.sh/hook-delete-policy"].split(",")) == {"before-hook-creation", "hook-succeeded"}, ann
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 4, job["spec"]
    steps = job_steps(job)
    assert [c["name"] for c in steps] == ["topic-0", "topic-1", "app-topics"], [c["name"] for c in steps]
    parsed = []
    for c in steps:
        assert c["command"] == ["kstreamlet"], "the image's entrypoint is `kstreamlet run`: the Job replaces it"
        assert c["args"][:2] == ["topics", "create"], c["args"]
        assert c["image"] == container(docs)["image"], "the Job runs the app's own image (it imports the app)"
        parsed.append(build_parser().parse_args(c["args"]))  # the real CLI: an unknown flag fails here
    lines, counts, app = parsed
    assert (lines.names, lines.partitions, lines.replication_factor, lines.if_not_exists) == (["lines"], 12, 3, True)
    assert lines.config == ["cleanup.policy=delete", "retention.ms=604800000"], lines.config
    assert (counts.names, counts.partitions, counts.replication_factor, counts.if_not_exists, counts.config) == \
        (["counts"], 8, 3, True, None), "list items default to topics.partitions / replicationFactor"
    assert (app.names, app.partitions, app.replication_factor, app.config) == \
        (["myservice.pipeline:app"], 8, 3, ["min.insync.replicas=2"]), "then the app's missing topics"
    assert steps[-1]["args"][2] == "myservice.pipeline:app"
    for c in steps:
        assert not any("configMapRef" in e for e in c.get("envFrom", [])), \
            "the chart's ConfigMap does not exist yet at pre-install"
        assert c.get("envFrom") == [{"secretRef": {"name": "app-env"}}], "the user's envFrom is the pods'"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]


@pytest.mark.parametrize(("args", "expected"), [
    ((), "default"),  # the chart's own ServiceAccount is created after pre-install hooks
    (("--set", "serviceAccount.create=false", "--set", "serviceAccount.name=streams-sa"), "streams-sa"),
    (("--set", "topics.job.serviceAccountName=topic-admin"), "topic-admin"),
])
def test_topics_job_service_account_exists_before_install(args, expected):
    job = topics_job(render("--set", "topics.create=true", *args))
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == expected


def test_topics_job_pod_is_outside_every_selector_of_the_app():
    docs = render(*TOPICS_FEATURES, "--set", "podAntiAffinityPreset.type=soft")
    job_labels = topics_job(docs)["spec"]["template"]["metadata"]["labels"]
    selectors = [workload(docs)["spec"]["selector"]["matchLabels"]]
    selectors += [d["spec"]["selector"] for d in docs if d["kind"] == "Service"]
    selectors += [d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "PodDisruptionBudget"]
    spec = pod_spec(docs)
    selectors += [t["podAffinityTerm"]["labelSelector"]["matchLabels"]
                  for t in spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]]
    selectors += [t["labelSelector"]["matchLabels"] for t in spec["topologySpreadConstraints"]]
    for sel in selectors:
        assert not selects(sel, job_labels), f"the Job's pod {job_labels} would be selected by {sel}"
    assert job_labels["app.kubernetes.io/instance"] == RELEASE


def test_topics_job_environment_loads_into_the_pods_settings(monkeypatch):
    """Same Kafka connection and app settings as the pods, without the ConfigMap (inline)."""
    from kstreamlet.config import load_settings

    secrets = {"kafka-credentials": {"username": "svc-words", "password": "s3cr3t-p@ss"},
               "mysql-url": {"url": "mysql://u:p@db:3306/app"}, "app-env": {}}
    for extra in ((), ("--set", "kafka.sasl.enabled=false")):
        docs = render(*ALL_FEATURES, *TOPICS_FEATURES, *extra)
        pod_env = _kubelet_env(docs, f"{FULLNAME}-0", secrets)
        for c in job_steps(topics_job(docs)):
            job_env = _kubelet_env(docs, f"{FULLNAME}-topics-x", secrets, c)
            seen = []
            for env in (pod_env, job_env):
                for k in [k for k in os.environ if k.startswith("KSTREAMLET_")]:
                    monkeypatch.delenv(k)
                for k, v in env.items():
                    monkeypatch.setenv(k, v)
                s = load_settings()
                seen.append((s.application_id, s.bootstrap_servers, s.kafka_config, s.security_config(),
                             s.processing_guarantee, s.commit_interval))
            assert seen[0] == seen[1], f"{c['name']}: the Job's settings differ from the pods':\n{seen[0]}\n{seen[1]}"
            assert job_env["IN_TOPIC"] == "lines" and job_env["KSTREAMLET_MYSQL_URL"] == pod_env["KSTREAMLET_MYSQL_URL"], \
                "the app is imported with the pods' own environment (extraEnv, MySQL URL)"


# --- bad values are refused -------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "mentions"), [
    (("--set", "replicas=-1"), "replicas"),
    (("--set", "kind=DaemonSet"), "kind"),
    (("--set", "workers=0"), "workers"),
    (("--set", "httpPort=70000"), "httpPort"),
    (("--set", "shutdownTimeoutSeconds=0"), "shutdownTimeoutSeconds"),
    (("--set", "config.processing_guarantee=maybe_once"), "processing_guarantee"),
    (("--set-json", "config.commit_interval=-1"), "commit_interval"),
    (("--set", "config.comit_interval=1"), "comit_interval"),  # a typo is an error, not silently ignored
    (("--set", "config.http_port=9000"), "http_port"),  # owned by the chart (httpPort)
    (("--set", "replica=3"), "replica"),
    (("--set", "image.pullPolicy=Sometimes"), "pullPolicy"),
    (("--set", "app=not a module"), "app"),
    (("--set", "kafka.sasl.enabled=true"), "existingSecret"),  # SASL without its Secret
    (("--set-json", 'kafka.config={"group.id": "x"}'), "group.id"),  # managed by kstreamlet
    (("--set", "podManagementPolicy=Random"), "podManagementPolicy"),
    (("--set", "podAntiAffinityPreset.type=sometimes"), "podAntiAffinityPreset"),
    (("--set", "podAntiAffinityPreset.weight=101"), "weight"),
    (("--set", "topologySpread.whenUnsatisfiable=Maybe"), "whenUnsatisfiable"),
    (("--set", "topologySpread.maxSkew=0"), "maxSkew"),
    (("--set", "topics.crate=true"), "crate"),
    (("--set", "topics.partitions=0"), "partitions"),
    (("--set", "topics.replicationFactor=0"), "replicationFactor"),
    (("--set-json", 'topics.list=[{"partitions": 3}]'), "name"),
    (("--set-json", 'topics.list=[{"name": "bad name"}]'), "name"),
    (("--set-json", 'topics.list=[{"name": "a", "partition": 3}]'), "partition"),
    (("--set", "metrics.prometheusRule.lagGrowingMinutes=0"), "lagGrowingMinutes"),
    (("--set", "metrics.prometheusRule.selector={job=x}"), "selector"),
    (("--set", "metrics.grafanaDashboard.enable=true"), "enable"),
])
def test_values_schema_rejects_bad_values(args, mentions):
    err = render_error(*args)
    assert "schema" in err and mentions in err, f"{args}: expected a schema error naming {mentions!r}, saw:\n{err}"


@pytest.mark.parametrize(("args", "mentions"), [
    (("--set", "kafka.configSecret.existingSecret=x", "--set", "kafka.sasl.enabled=true",
      "--set", "kafka.sasl.existingSecret=y"), "kafka.configSecret"),
    (("--set", "podDisruptionBudget.minAvailable=1"), "not both"),
    (("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"), "metrics.service.enabled"),
    (("--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=5", "--set", "autoscaling.maxReplicas=2"),
     "must not exceed"),
    (("--set", "httpPort=65535", "--set", "workers=2"), "exceeds 65535"),
    (("--set", "topics.create=true", "--set", "topics.fromApp=false"), "topics.create needs topics"),
    (("--set", "topics.create=true", "--set-json", 'topics.list=[{"name": "a"}, {"name": "a"}]'), "names a twice"),
])
def test_conflicting_values_fail_with_a_message(args, mentions):
    err = render_error(*args)
    assert mentions in err, f"{args}: expected an error mentioning {mentions!r}, saw:\n{err}"


# --- chart hygiene ----------------------------------------------------------------------------------

#: Settings the chart sets itself instead of through `config`.
CHART_OWNED_SETTINGS = {"instance_id", "http_port", "shutdown_timeout", "state_dir", "kafka_config",
                        "static_membership", "advertised_url",
                        # kafka.sasl / kafka.tls (Secrets); ssl_key_password: extraEnv with a secretKeyRef
                        "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_ca_location",
                        "ssl_certificate_location", "ssl_key_location", "ssl_key_password",
                        # queries.* (token Secret, TLS Secret); pods listen on all interfaces for the probes
                        "http_host", "http_auth_token", "http_tls_certificate_location", "http_tls_key_location",
                        "http_tls_ca_location", "query_access",
                        # a secret and a JSON object: through envFrom (a Secret), as values.yaml says
                        "schema_registry_basic_auth_user_info", "schema_registry_config"}


def test_config_values_cover_exactly_the_kstreamlet_settings():
    from kstreamlet.config import Settings

    schema = json.loads((CHART / "values.schema.json").read_text())
    in_chart = set(schema["properties"]["config"]["properties"])
    settings = set(Settings.model_fields)
    assert not in_chart - settings, f"config keys that are not kstreamlet settings: {sorted(in_chart - settings)}"
    missing = settings - in_chart - CHART_OWNED_SETTINGS
    assert not missing, f"kstreamlet settings the chart cannot set (add them to values.yaml `config` and the schema): {sorted(missing)}"
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    assert set(defaults) == in_chart, f"values.yaml config keys {sorted(defaults)} differ from the schema's {sorted(in_chart)}"
    from kstreamlet.config import _RESERVED

    refused = set(schema["properties"]["kafka"]["properties"]["config"]["propertyNames"]["not"]["enum"])
    assert refused == _RESERVED, f"kafka.config must refuse exactly kstreamlet's reserved keys {sorted(_RESERVED)}, refuses {sorted(refused)}"


def test_every_value_is_documented_by_a_comment():
    """Each leaf value in values.yaml has a comment right above it or above an enclosing key.

    Grouping keys (``image:`` followed by indented children) need no comment of their own
    when each child has one.
    """
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, has its own comment) of the enclosing keys
    prev_comment = False
    for n, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            prev_comment = stripped.startswith("#")
            continue
        m = re.match(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$", line)
        if m and not stripped.startswith("- "):
            indent, key, rest = len(m[1]), m[2], m[3].strip()
            while stack and stack[-1][0] >= indent:
                stack.pop()
            is_group = rest == ""
            if not is_group and not prev_comment and not any(doc for _, doc in stack):
                undocumented.append(f"line {n}: {key}")
            stack.append((indent, prev_comment))
        prev_comment = False
    assert not undocumented, "values without a comment:\n" + "\n".join(undocumented)


def test_chart_app_version_is_the_package_version():
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version, f"Chart appVersion {chart['appVersion']!r} != pyproject version {version!r}"
    assert chart["apiVersion"] == "v2"


# --- query protection (docs/security.md, "HTTP endpoints") ---------------------------------------------

def _env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    c = workload(docs)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_queries_need_a_bearer_token_from_a_secret_the_chart_makes_by_default():
    docs = render()
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert secret["metadata"]["name"] == f"{FULLNAME}-qtoken"
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) == 40 and token.isalnum()
    env = _env(docs)
    assert env["KSTREAMLET_HTTP_AUTH_TOKEN"] == {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "token"}}
    assert "KSTREAMLET_QUERY_ACCESS" not in env
    # The token is in no ConfigMap (only the Secret holds it).
    for d in docs:
        if d["kind"] == "ConfigMap":
            assert token not in json.dumps(d)


def test_an_existing_token_secret_or_open_queries_make_no_secret():
    docs = render("--set", "queries.existingSecret=my-token", "--set", "queries.tokenKey=t")
    assert "Secret" not in kinds(docs)
    assert _env(docs)["KSTREAMLET_HTTP_AUTH_TOKEN"] == {"secretKeyRef": {"name": "my-token", "key": "t"}}
    docs = render("--set", "queries.access=open")
    assert "Secret" not in kinds(docs)
    env = _env(docs)
    assert env["KSTREAMLET_QUERY_ACCESS"] == "open" and "KSTREAMLET_HTTP_AUTH_TOKEN" not in env


def test_https_and_mtls_from_a_tls_secret_switch_probes_and_the_advertised_url():
    docs = render("--set", "queries.tlsSecret=http-tls", "--set", "queries.mtls=true")
    env = _env(docs)
    assert env["KSTREAMLET_HTTP_TLS_CERTIFICATE_LOCATION"] == "/etc/kstreamlet/http-tls/tls.crt"
    assert env["KSTREAMLET_HTTP_TLS_KEY_LOCATION"] == "/etc/kstreamlet/http-tls/tls.key"
    assert env["KSTREAMLET_HTTP_TLS_CA_LOCATION"] == "/etc/kstreamlet/http-tls/ca.crt"
    assert env["KSTREAMLET_ADVERTISED_URL"].startswith("https://")
    pod = workload(docs)["spec"]["template"]["spec"]
    c = pod["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["scheme"] == "HTTPS"
    assert {"name": "http-tls", "mountPath": "/etc/kstreamlet/http-tls", "readOnly": True} in c["volumeMounts"]
    assert any(v["name"] == "http-tls" and v["secret"]["secretName"] == "http-tls" for v in pod["volumes"])
    plain = workload(render())["spec"]["template"]["spec"]["containers"][0]
    assert plain["livenessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert "mtls" in render_error("--set", "queries.mtls=true").lower() or "tlsSecret" in render_error("--set", "queries.mtls=true")
