"""``kstreamlet topics create | list | describe | delete``: topic administration without Kafka's
shell scripts, and ``kstreamlet topics create module:app`` for the topics an app reads and writes.

Python API: :func:`create`, :func:`app_topics`, :func:`list_topics`, :func:`describe`, :func:`delete`
(each takes an ``AdminClient``; :func:`kstreamlet.tools.common.admin_client` makes one).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic

from kstreamlet.tools.common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    ToolError,
    add_connection_args,
    add_json_arg,
    admin_client,
    command,
    dumps,
    kafka_error_code,
    kafka_error_text,
    load_tool_app,
    subparser,
    tool_settings,
)


def parse_configs(items: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` as a dict (ValueError naming a malformed item)."""
    out: dict[str, str] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"--config expects key=value, got {item!r}")
        out[k.strip()] = v.strip()
    return out


def create(admin: Any, names: list[str], partitions: int = 1, replication_factor: int = -1,
           config: dict[str, str] | None = None, if_not_exists: bool = False,
           timeout: float = 30.0) -> dict[str, str]:
    """Create topics; returns ``{name: "created" | "exists"}`` (an existing topic raises ToolError
    unless ``if_not_exists``). Waits until their metadata is visible."""
    if not names:
        return {}
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor, config=dict(config or {}))
         for n in names], request_timeout=timeout)
    result: dict[str, str] = {}
    errors: list[str] = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
            result[name] = "created"
        except KafkaException as e:
            if kafka_error_code(e) == KafkaError.TOPIC_ALREADY_EXISTS and if_not_exists:
                result[name] = "exists"
            else:
                errors.append(f"{name}: {kafka_error_text(e)}")
    _wait_visible(admin, [n for n, r in result.items() if r == "created"], timeout)
    if errors:
        done = f" (created: {', '.join(sorted(n for n, r in result.items() if r == 'created'))})" if result else ""
        raise ToolError("cannot create " + "; ".join(errors) + done)
    return result


def _wait_visible(admin: Any, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        md = admin.list_topics(timeout=5)
        pending = {t for t in pending if t not in md.topics or md.topics[t].error is not None}
        if pending:
            time.sleep(0.1)


def app_topics(app: Any) -> dict[str, list[str]]:
    """The user topics an app needs to exist: ``{"sources": [...], "sinks": [...], "broadcasts": [...]}``
    (internal topics, the DLQ and changelogs are created by the app itself)."""
    topology = app.topology()
    sources = sorted({t for st in topology.subtopologies for t, src in st.sources.items() if not src.internal})
    sinks = sorted({s.topic for st in topology.subtopologies for s in st.sinks if not s.internal} - set(sources))
    internal = set(topology.internal_topics)
    broadcasts = sorted(t for t in topology.broadcasts if t not in internal)
    return {"sources": sources, "sinks": sinks, "broadcasts": broadcasts}


def create_for_app(admin: Any, app: Any, partitions: int = 1, replication_factor: int = -1,
                   config: dict[str, str] | None = None) -> dict[str, str]:
    """Create the app's source, sink and broadcast topics that do not exist yet; returns
    ``{topic: "created" | "exists"}``."""
    wanted = sorted({t for ts in app_topics(app).values() for t in ts})
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [t for t in wanted if t not in existing]
    result = {t: "exists" for t in wanted if t in existing}
    result.update(create(admin, missing, partitions, replication_factor, config, if_not_exists=True))
    return result


def list_topics(admin: Any, include_internal: bool = False) -> list[dict[str, Any]]:
    """Topics with their partition count and replication factor, sorted by name; Kafka's own
    ``__`` topics only with ``include_internal``."""
    md = admin.list_topics(timeout=10)
    out = []
    for name, t in sorted(md.topics.items()):
        if name.startswith("__") and not include_internal:
            continue
        parts = t.partitions.values()
        rf = max((len(p.replicas) for p in parts), default=0)
        out.append({"name": name, "partitions": len(t.partitions), "replication_factor": rf})
    return out


def describe(admin: Any, names: list[str], timeout: float = 10.0) -> list[dict[str, Any]]:
    """Partitions (leader, replicas, ISR) and non-default configs of each topic; ToolError (exit 1)
    for one that does not exist."""
    md = admin.list_topics(timeout=timeout)
    missing = [n for n in names if n not in md.topics or md.topics[n].error is not None]
    if missing:
        raise ToolError(f"topic(s) {', '.join(missing)} do not exist", EXIT_NOT_FOUND)
    futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in names],
                                     request_timeout=timeout)
    configs: dict[str, dict[str, str]] = {}
    for res, fut in futures.items():
        entries = fut.result(timeout)
        configs[res.name] = {k: e.value for k, e in sorted(entries.items())
                             if not e.is_default and e.value is not None and not e.is_sensitive}
    out = []
    for n in names:
        t = md.topics[n]
        parts = [{"partition": p.id, "leader": p.leader, "replicas": list(p.replicas), "isr": list(p.isrs)}
                 for p in sorted(t.partitions.values(), key=lambda p: p.id)]
        out.append({"name": n, "partitions": len(parts),
                    "replication_factor": max((len(p["replicas"]) for p in parts), default=0),
                    "configs": configs.get(n, {}), "partition_details": parts})
    return out


def delete(admin: Any, names: list[str], timeout: float = 30.0, wait: bool = True) -> dict[str, str]:
    """Delete topics; returns ``{name: "deleted" | "missing"}``. Waits until the metadata no longer
    lists them (so a re-creation right after does not fail)."""
    if not names:
        return {}
    result: dict[str, str] = {}
    errors: list[str] = []
    for name, fut in admin.delete_topics(names, request_timeout=timeout).items():
        try:
            fut.result(timeout)
            result[name] = "deleted"
        except KafkaException as e:
            if kafka_error_code(e) == KafkaError.UNKNOWN_TOPIC_OR_PART:
                result[name] = "missing"
            else:
                errors.append(f"{name}: {kafka_error_text(e)}")
    if wait:
        deadline = time.monotonic() + timeout
        gone = [n for n, r in result.items() if r == "deleted"]
        while gone and time.monotonic() < deadline:
            md = admin.list_topics(timeout=5)
            gone = [n for n in gone if n in md.topics]
            if gone:
                time.sleep(0.2)
    if errors:
        raise ToolError("cannot delete " + "; ".join(errors), EXIT_NOT_FOUND)
    return result


# --- commands ---------------------------------------------------------------------------------------

@command
def _cmd_create(args: argparse.Namespace) -> int:
    try:
        config = parse_configs(args.config)
    except ValueError as e:
        raise ToolError(str(e)) from None
    specs = [n for n in args.names if ":" in n]
    if specs and len(args.names) > 1:
        raise ToolError("give either topic names or one module:app, not both")
    if args.partitions < 1:
        raise ToolError("--partitions must be >= 1")
    if specs:
        app = load_tool_app(specs[0], args.bootstrap_servers)
        admin = admin_client(app.settings)
        result = create_for_app(admin, app, args.partitions, args.replication_factor, config)
    else:
        admin = admin_client(tool_settings(args.bootstrap_servers))
        result = create(admin, args.names, args.partitions, args.replication_factor, config, args.if_not_exists)
    if args.json:
        print(dumps({"topics": result}))
    else:
        for name, r in sorted(result.items()):
            print(f"{r}\t{name}")
    return EXIT_OK


@command
def _cmd_list(args: argparse.Namespace) -> int:
    admin = admin_client(tool_settings(args.bootstrap_servers))
    topics = list_topics(admin, include_internal=args.all)
    if args.json:
        print(dumps(topics))
    else:
        for t in topics:
            print(t["name"])
    return EXIT_OK


@command
def _cmd_describe(args: argparse.Namespace) -> int:
    admin = admin_client(tool_settings(args.bootstrap_servers))
    topics = describe(admin, args.names)
    if args.json:
        print(dumps(topics))
        return EXIT_OK
    for t in topics:
        configs = ",".join(f"{k}={v}" for k, v in t["configs"].items()) or "(defaults)"
        print(f"Topic: {t['name']}\tPartitions: {t['partitions']}\tReplicationFactor: {t['replication_factor']}"
              f"\tConfigs: {configs}")
        for p in t["partition_details"]:
            print(f"\tPartition: {p['partition']}\tLeader: {p['leader']}\tReplicas: "
                  f"{','.join(map(str, p['replicas']))}\tIsr: {','.join(map(str, p['isr']))}")
    return EXIT_OK


@command
def _cmd_delete(args: argparse.Namespace) -> int:
    if not args.yes:
        raise ToolError(f"refusing to delete {', '.join(args.names)} without --yes (deleting a topic loses its data)")
    admin = admin_client(tool_settings(args.bootstrap_servers))
    result = delete(admin, args.names)
    if args.json:
        print(dumps({"topics": result}))
    else:
        for name, r in sorted(result.items()):
            print(f"{r}\t{name}")
    missing = [n for n, r in result.items() if r == "missing"]
    return EXIT_NOT_FOUND if missing and not args.if_exists else EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register ``kstreamlet topics ...``."""
    top = subparsers.add_parser(
        "topics", help="create, list, describe and delete topics",
        description="Topic administration (no kafka-topics.sh needed).")
    sub = top.add_subparsers(dest="topics_cmd", required=True)

    c = subparser(sub, "create", "create topics, or the missing topics of an app (module:app)", """
  kstreamlet topics create lines word-counts --partitions 6
  kstreamlet topics create users --config cleanup.policy=compact --config retention.ms=-1
  kstreamlet topics create lines --if-not-exists --json
  IN_TOPIC=lines OUT_TOPIC=counts kstreamlet topics create services.wordcount:app --partitions 6
""", description="Create topics. Given module:app instead of names, create the app's source, sink and "
                 "broadcast topics that do not exist yet (internal topics and the DLQ are the app's own).")
    c.add_argument("names", nargs="+", metavar="TOPIC|module:app")
    c.add_argument("--partitions", "-p", type=int, default=1, help="partition count (default 1)")
    c.add_argument("--replication-factor", "-r", type=int, default=-1,
                   help="replication factor (default -1: the broker's default.replication.factor)")
    c.add_argument("--config", "-c", action="append", metavar="KEY=VALUE",
                   help="topic config, repeatable (e.g. cleanup.policy=compact)")
    c.add_argument("--if-not-exists", action="store_true", help="an existing topic is not an error")
    add_connection_args(c)
    add_json_arg(c)
    c.set_defaults(fn=_cmd_create)

    ls = subparser(sub, "list", "list topics (Kafka's own __ topics only with --all)", """
  kstreamlet topics list
  kstreamlet topics list --all --json
""")
    ls.add_argument("--all", action="store_true", help="include internal topics starting with __")
    add_connection_args(ls)
    add_json_arg(ls, "name, partitions and replication factor of each topic")
    ls.set_defaults(fn=_cmd_list)

    d = subparser(sub, "describe", "partitions, leaders, replicas, ISR and non-default configs", """
  kstreamlet topics describe lines
  kstreamlet topics describe wordcount-counts-value-changelog --json
""")
    d.add_argument("names", nargs="+", metavar="TOPIC")
    add_connection_args(d)
    add_json_arg(d)
    d.set_defaults(fn=_cmd_describe)

    rm = subparser(sub, "delete", "delete topics (asks for --yes)", """
  kstreamlet topics delete old-lines --yes
  kstreamlet topics delete a b c --yes --if-exists
""")
    rm.add_argument("names", nargs="+", metavar="TOPIC")
    rm.add_argument("--yes", action="store_true", help="really delete (without it nothing is deleted, exit 2)")
    rm.add_argument("--if-exists", action="store_true", help="a missing topic is not an error (exit 0)")
    add_connection_args(rm)
    add_json_arg(rm)
    rm.set_defaults(fn=_cmd_delete)


__all__ = ["add_parser", "parse_configs", "create", "create_for_app", "app_topics", "list_topics", "describe",
           "delete", "EXIT_REFUSED"]
