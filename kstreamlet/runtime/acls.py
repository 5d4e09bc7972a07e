"""The ACLs an application needs (docs/security.md), and clear errors when one is missing.

:func:`required_acls` derives them from the topology and settings:

=====================  ===========================  ==========================================
resource               operation                    why
=====================  ===========================  ==========================================
input topics           READ                         the group member and broadcast readers
output topics          WRITE, DESCRIBE_CONFIGS      sinks (DESCRIBE_CONFIGS: output size checks)
``<app>-`` topics      ALL (prefixed)               changelogs, repartition, DLQ, topology record
group ``<app>``        READ                         the consumer group (commits, membership)
groups ``<app>-``      READ (prefixed)              restore / broadcast consumers' group ids
transactional ids      WRITE, DESCRIBE (prefixed    exactly-once: ``<app>-<instance>``
``<app>-``             ``<app>-``)
cluster                IDEMPOTENT_WRITE             the idempotent producer
=====================  ===========================  ==========================================

A DLQ topic outside the ``<app>-`` prefix (``dlq_topic``) gets CREATE, WRITE and DESCRIBE_CONFIGS.

:func:`access_error` turns a Kafka authorization or authentication error into an
:class:`~kstreamlet.errors.AccessError` whose one line names the ACL (principal, operation,
resource) or the setting; :func:`missing_topic_acls` asks the broker (``describe_topics`` with
authorized operations) which topic ACL is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from confluent_kafka import KafkaError, KafkaException

from kstreamlet.errors import AccessError

if TYPE_CHECKING:
    from kstreamlet.config import Settings
    from kstreamlet.topology.builder import Topology

#: The cluster resource's name in ACLs.
CLUSTER = "kafka-cluster"

# kafka-acls' spelling of each operation and resource option.
_CLI_OPERATION = {"READ": "Read", "WRITE": "Write", "CREATE": "Create", "DELETE": "Delete", "ALTER": "Alter",
                  "DESCRIBE": "Describe", "DESCRIBE_CONFIGS": "DescribeConfigs", "ALTER_CONFIGS": "AlterConfigs",
                  "IDEMPOTENT_WRITE": "IdempotentWrite", "ALL": "All"}
_CLI_RESOURCE = {"TOPIC": "--topic", "GROUP": "--group", "TRANSACTIONAL_ID": "--transactional-id", "CLUSTER": "--cluster"}
# Operations an ACL on ``ALL`` or another operation implies (Kafka's AclEntry.implies).
_IMPLIED = {"DESCRIBE": {"READ", "WRITE", "DELETE", "ALTER"}, "DESCRIBE_CONFIGS": {"ALTER_CONFIGS"}}


@dataclass(frozen=True)
class Acl:
    """One ALLOW ACL: ``operation`` on ``resource_type`` ``name`` (``LITERAL`` or ``PREFIXED``), any host."""

    resource_type: str  # TOPIC | GROUP | TRANSACTIONAL_ID | CLUSTER
    name: str
    pattern: str  # LITERAL | PREFIXED
    operation: str  # READ | WRITE | ALL | DESCRIBE | DESCRIBE_CONFIGS | CREATE | IDEMPOTENT_WRITE
    why: str = ""

    def describe(self) -> str:
        """``WRITE on topic 'out'`` / ``ALL on topics prefixed 'app-'``."""
        kind = {"TOPIC": "topic", "GROUP": "group", "TRANSACTIONAL_ID": "transactional id",
                "CLUSTER": "cluster"}[self.resource_type]
        if self.pattern == "PREFIXED":
            return f"{self.operation} on {kind}s prefixed {self.name!r}"
        return f"{self.operation} on {kind} {self.name!r}" if self.resource_type != "CLUSTER" else \
            f"{self.operation} on the cluster"

    def kafka_acls_line(self, principal: str, bootstrap: str = "$BOOTSTRAP") -> str:
        """The ``kafka-acls.sh`` command that adds it."""
        res = _CLI_RESOURCE[self.resource_type]
        target = res if self.resource_type == "CLUSTER" else f"{res} {self.name}"
        pattern = " --resource-pattern-type prefixed" if self.pattern == "PREFIXED" else ""
        return (f"kafka-acls.sh --bootstrap-server {bootstrap} --add --allow-principal {principal} "
                f"--operation {_CLI_OPERATION[self.operation]} {target}{pattern}")

    def binding(self, principal: str) -> Any:
        """The ``confluent_kafka.admin.AclBinding`` of this ACL for ``principal``."""
        from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

        restype = ResourceType.BROKER if self.resource_type == "CLUSTER" else ResourceType[self.resource_type]
        return AclBinding(restype, self.name, ResourcePatternType[self.pattern], principal, "*",
                          AclOperation[self.operation], AclPermissionType.ALLOW)

    def covers(self, resource_type: str, name: str, operation: str) -> bool:
        """Whether this ACL allows ``operation`` on the resource ``name``."""
        if self.resource_type != resource_type:
            return False
        if not (name == self.name if self.pattern == "LITERAL" else name.startswith(self.name)):
            return False
        return self.operation in ("ALL", operation) or self.operation in _IMPLIED.get(operation, set())


def internal_prefix(application_id: str) -> str:
    return f"{application_id}-"


def required_acls(topology: "Topology", settings: "Settings") -> list[Acl]:
    """Every ACL the app's principal needs, in a stable order (docs/security.md)."""
    app = settings.application_id
    prefix = internal_prefix(app)
    acls: list[Acl] = []

    def topic(name: str, op: str, why: str) -> None:
        if not name.startswith(prefix):
            acl = Acl("TOPIC", name, "LITERAL", op, why)
            if acl not in acls:
                acls.append(acl)

    inputs = sorted({t for st in topology.subtopologies for t, src in st.sources.items() if not src.internal}
                    | set(topology.broadcasts))
    outputs = sorted({s.topic for st in topology.subtopologies for s in st.sinks if not s.internal})
    for t in inputs:
        topic(t, "READ", "input")
    for t in outputs:
        topic(t, "WRITE", "output")
        topic(t, "DESCRIBE_CONFIGS", "output size checks")
    if settings.error_policy == "dlq":
        dlq = settings.effective_dlq_topic
        for op in ("CREATE", "WRITE", "DESCRIBE_CONFIGS"):
            topic(dlq, op, "dead-letter topic")
    acls.append(Acl("TOPIC", prefix, "PREFIXED", "ALL", "internal topics: changelogs, repartition, DLQ, topology"))
    acls.append(Acl("GROUP", app, "LITERAL", "READ", "consumer group"))
    acls.append(Acl("GROUP", prefix, "PREFIXED", "READ", "restore and broadcast consumers"))
    if settings.processing_guarantee == "exactly_once":
        acls.append(Acl("TRANSACTIONAL_ID", prefix, "PREFIXED", "WRITE", "exactly-once transactions"))
        acls.append(Acl("TRANSACTIONAL_ID", prefix, "PREFIXED", "DESCRIBE", "exactly-once transactions"))
    acls.append(Acl("CLUSTER", CLUSTER, "LITERAL", "IDEMPOTENT_WRITE", "idempotent producer"))
    return acls


def principal_of(settings: "Settings") -> str:
    """``User:<sasl_username>`` or a placeholder naming the setting."""
    return settings.principal or "User:<sasl_username>"


# --- errors ---------------------------------------------------------------------------------------

_AUTHORIZATION = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "TOPIC",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "GROUP",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "TRANSACTIONAL_ID",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "CLUSTER",
}
_AUTHORIZATION_TEXT = {
    "topic authorization failed": "TOPIC",
    "group authorization failed": "GROUP",
    "transactional id authorization failed": "TRANSACTIONAL_ID",
    "cluster authorization failed": "CLUSTER",
}


def _kafka_error(e: BaseException | KafkaError) -> KafkaError | None:
    if isinstance(e, KafkaError):
        return e
    if isinstance(e, KafkaException) and e.args and isinstance(e.args[0], KafkaError):
        return e.args[0]
    return None


def authorization_kind(e: BaseException | KafkaError) -> str | None:
    """``TOPIC`` | ``GROUP`` | ``TRANSACTIONAL_ID`` | ``CLUSTER`` when ``e`` is (or wraps the text of)
    an authorization failure, else None."""
    err = _kafka_error(e)
    if err is not None and err.code() in _AUTHORIZATION:
        return _AUTHORIZATION[err.code()]
    text = (err.str() if err is not None else str(e)).lower()
    for needle, kind in _AUTHORIZATION_TEXT.items():
        if needle in text:
            return kind
    return None


def is_authentication_error(e: BaseException | KafkaError) -> bool:
    err = _kafka_error(e)
    if err is not None and err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        return True
    text = (err.str() if err is not None else str(e)).lower()
    return "sasl authentication error" in text or "authentication failed" in text


def is_tls_error(e: BaseException | KafkaError) -> bool:
    err = _kafka_error(e)
    if err is not None and err.code() == KafkaError._SSL:
        return True
    text = (err.str() if err is not None else str(e)).lower()
    return "ssl handshake failed" in text or "certificate verify failed" in text


def credentials_error(settings: "Settings", detail: str) -> AccessError:
    """Wrong password / unknown user: one line naming the settings (never the password)."""
    user = settings.sasl_username or settings.kafka_config.get("sasl.username") or "?"
    mech = settings.sasl_mechanism or settings.kafka_config.get("sasl.mechanisms") or "?"
    return AccessError(
        f"Kafka refused the login of SASL user {user!r} ({mech}) at {settings.bootstrap_servers}: wrong password or "
        "unknown user (settings sasl_username / sasl_password, env KSTREAMLET_SASL_USERNAME / "
        f"KSTREAMLET_SASL_PASSWORD): {_one_line(detail)}")


def tls_error(settings: "Settings", detail: str) -> AccessError:
    """An untrusted broker certificate (or another TLS failure): one line naming the setting."""
    ca = settings.ssl_ca_location or settings.kafka_config.get("ssl.ca.location")
    where = f"ssl_ca_location (env KSTREAMLET_SSL_CA_LOCATION) = {ca}" if ca else \
        "ssl_ca_location (env KSTREAMLET_SSL_CA_LOCATION) is not set, so only the system's CAs are trusted"
    if "certificate verify failed" in detail.lower() or "could not be verified" in detail.lower():
        what = "the broker's certificate is not signed by a trusted CA"
    else:
        what = "the TLS handshake failed"
    return AccessError(f"TLS to Kafka at {settings.bootstrap_servers} failed: {what} ({where}; security_protocol "
                       f"{settings.security_protocol or settings.kafka_config.get('security.protocol')}): "
                       f"{_one_line(detail)}")


def acl_error(settings: "Settings", missing: Iterable[Acl], detail: str = "") -> AccessError:
    """A missing ACL: one line naming each missing ACL (operation, resource) and the principal."""
    principal = principal_of(settings)
    items = list(missing)
    what = "; ".join(a.describe() for a in items) or "an ACL"
    fix = f"; grant it: {items[0].kafka_acls_line(principal)}" if len(items) == 1 else ""
    tail = f" ({_one_line(detail)})" if detail else ""
    return AccessError(f"missing ACL: {principal} needs {what}{tail}{fix} — `kstreamlet acls <module:app>` prints "
                       "every ACL the app needs (docs/security.md)")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def missing_topic_acls(admin: Any, acls: Iterable[Acl], topics: Iterable[str], timeout: float = 10.0,
                       fatal_only: bool = True) -> list[Acl]:
    """Of the topic-level operations ``acls`` require on ``topics``, those the broker says the
    principal is not allowed (``describe_topics(include_authorized_operations=True)``). A topic the
    principal may not even describe counts as missing its operations. Topics that do not exist
    are skipped (their check is prepare_topics'). ``fatal_only``: leave out DESCRIBE_CONFIGS, whose
    absence only degrades the output size checks (a warning, runtime/production.py)."""
    from confluent_kafka import TopicCollection

    names = sorted(set(topics))
    if not names:
        return []
    wanted = [a for a in acls if a.resource_type == "TOPIC"]
    futures = admin.describe_topics(TopicCollection(names), request_timeout=timeout,
                                    include_authorized_operations=True)
    missing: list[Acl] = []
    for name, fut in futures.items():
        ops_needed = sorted({a.operation for a in wanted if a.covers("TOPIC", name, a.operation)}
                            - ({"DESCRIBE_CONFIGS"} if fatal_only else set()))
        try:
            desc = fut.result(timeout)
        except KafkaException as e:
            err = _kafka_error(e)
            if err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                missing += [Acl("TOPIC", name, "LITERAL", op) for op in ops_needed]
            continue
        allowed = {getattr(op, "name", str(op)) for op in (desc.authorized_operations or [])}
        if not allowed:  # the broker did not say: nothing to conclude
            continue
        for op in ops_needed:
            if op == "ALL":
                # ALL on a prefix is what internal topics need; check what kstreamlet does with them.
                lacking = [o for o in ("READ", "WRITE", "CREATE") if o not in allowed]
                if lacking:
                    missing.append(Acl("TOPIC", name, "LITERAL", "ALL"))
            elif op not in allowed:
                missing.append(Acl("TOPIC", name, "LITERAL", op))
    return missing


def access_error(settings: "Settings", e: BaseException | KafkaError, admin: Any = None,
                 topology: "Topology | None" = None, topics: Iterable[str] = ()) -> AccessError | None:
    """The AccessError for an authentication, TLS or authorization failure ``e``, else None.

    For a topic authorization failure, ``admin`` (the app's own admin client) and ``topics`` let it
    find out which topic and operation are missing."""
    err = _kafka_error(e)
    detail = err.str() if err is not None else str(e)
    if is_authentication_error(e):
        return credentials_error(settings, detail)
    if is_tls_error(e):
        return tls_error(settings, detail)
    kind = authorization_kind(e)
    if kind is None:
        return None
    app = settings.application_id
    needed = required_acls(topology, settings) if topology is not None else []
    if kind == "TOPIC" and admin is not None and topology is not None:
        try:
            found = missing_topic_acls(admin, needed, topics)
        except Exception:  # the hint is best effort; the error is reported anyway
            found = []
        if found:
            return acl_error(settings, found, detail)
    guesses = [a for a in needed if a.resource_type == kind]
    if kind == "GROUP":
        guesses = [a for a in guesses if a.name == app] or [Acl("GROUP", app, "LITERAL", "READ")]
    elif kind == "TRANSACTIONAL_ID":
        guesses = guesses or [Acl("TRANSACTIONAL_ID", internal_prefix(app), "PREFIXED", "WRITE")]
    elif kind == "CLUSTER":
        guesses = guesses or [Acl("CLUSTER", CLUSTER, "LITERAL", "IDEMPOTENT_WRITE")]
    else:
        guesses = []
    return acl_error(settings, guesses, detail)


__all__ = ["Acl", "required_acls", "principal_of", "access_error", "acl_error", "credentials_error", "tls_error",
           "missing_topic_acls", "authorization_kind", "is_authentication_error", "is_tls_error", "CLUSTER"]
