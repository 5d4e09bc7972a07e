"""``kstreamlet reset module:app``: make an app reprocess its input from the start (or a time, or
an offset), like Kafka's ``kafka-streams-application-reset``.

What a reset does (``--dry-run`` prints it and does nothing):

1. refuses (exit 2) while the app's consumer group (= ``application_id``) has active members —
   stop every instance first;
2. sets the group's committed offsets of the app's input topics (its user source topics and the
   topics of its custom sources) to the earliest offset (default), the first offset at or after
   ``--to-datetime`` / ``now - --by-duration``, or ``--to-offset`` (clamped to each partition's
   range); the offsets' stream-time metadata goes with them;
3. deletes the app's internal topics: repartition topics and the changelogs of its stores
   (``<application_id>-<store>-changelog``), the recorded topology (``<application_id>-topology``,
   so the app may start as a changed topology) and the query metadata
   (``<application_id>-query-metadata``), and with them the group's committed offsets of
   the repartition topics (the broker drops a deleted topic's offsets); the dead-letter topic
   (and the replay group of ``kstreamlet dlq replay``) only with ``--include-dlq``;
4. wipes the local state directory ``state_dir/<application_id>`` of *this* machine. Each other
   machine (pod volume) that ran the app keeps its directory: wipe it too (its stores would
   otherwise be checked against the new, empty changelogs: a store whose changelog offset is
   beyond the changelog's end is wiped at start, but one from a shorter old run may not be).

Topics of the broadcast inputs and of broadcast sources are left alone: they are read whole by
every member, with no group offsets.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from kstreamlet.tools import topics as topics_tool
from kstreamlet.tools.common import (
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
    parse_datetime_ms,
    parse_duration,
    subparser,
)


@dataclass
class Position:
    """Where the inputs are reset to: ``earliest``, ``timestamp`` (ms) or ``offset``."""

    kind: str = "earliest"
    value: int | None = None

    def describe(self) -> str:
        return {"earliest": "earliest", "timestamp": f"first offset at or after timestamp {self.value} ms",
                "offset": f"offset {self.value}"}.get(self.kind, self.kind)


@dataclass
class ResetPlan:
    application_id: str
    group: str
    position: Position
    input_topics: list[str]
    #: ``{(topic, partition): new offset}``.
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    delete_topics: list[str] = field(default_factory=list)
    delete_groups: list[str] = field(default_factory=list)
    state_dir: str = ""
    state_dir_exists: bool = False
    missing_inputs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"application_id": self.application_id, "group": self.group, "reset_to": self.position.describe(),
                "input_topics": self.input_topics, "missing_input_topics": self.missing_inputs,
                "offsets": [{"topic": t, "partition": p, "offset": o} for (t, p), o in sorted(self.offsets.items())],
                "delete_topics": self.delete_topics, "delete_groups": self.delete_groups,
                "state_dir": self.state_dir, "wipe_state_dir": self.state_dir_exists}

    def to_text(self) -> str:
        lines = [f"reset of application {self.application_id} (group {self.group}), inputs to {self.position.describe()}:"]
        for (t, p), o in sorted(self.offsets.items()):
            lines.append(f"  offset  {t}[{p}] -> {o}")
        for t in self.missing_inputs:
            lines.append(f"  (input topic {t} does not exist: nothing to reset)")
        for t in self.delete_topics:
            lines.append(f"  delete  topic {t}")
        for g in self.delete_groups:
            lines.append(f"  delete  group {g}")
        lines.append(f"  wipe    {self.state_dir}" if self.state_dir_exists
                     else f"  (no local state at {self.state_dir})")
        return "\n".join(lines)


def input_topics(app: Any) -> list[str]:
    """Topics whose group offsets a reset moves: user source topics and custom sources' topics."""
    topology = app.topology()
    custom = {cs.topic for cs in topology.custom_sources}
    broadcast_sources = {t for t in custom if t in topology.broadcasts}
    out = {t for st in topology.subtopologies for t, src in st.sources.items()
           if not src.internal or (t in custom and t not in broadcast_sources)}
    return sorted(out)


def internal_topics(app: Any, include_dlq: bool = False) -> list[str]:
    """The app's topics a reset deletes: repartition topics, store changelogs, the recorded
    topology and the query metadata (and the DLQ)."""
    from kstreamlet.query.metadata import metadata_topic
    from kstreamlet.runtime.topology_check import topology_topic
    from kstreamlet.state.inspect import discover_stores

    topology = app.topology()
    custom = {cs.topic for cs in topology.custom_sources}
    out = {t for t in topology.internal_topics if t not in custom}
    out |= {s.changelog for s in discover_stores(app).values()}
    # With its state gone the app may start as a changed topology: the record of the old one goes too.
    app_id = app.settings.application_id
    out |= {topology_topic(app_id), metadata_topic(app_id)}
    if include_dlq:
        out.add(app.settings.effective_dlq_topic)
    return sorted(out)


def active_members(admin: Any, group: str, timeout: float = 10.0) -> list[str]:
    """Client ids (and hosts) of the group's active members; [] when it has none or does not exist."""
    fut = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
    try:
        desc = fut.result(timeout)
    except KafkaException as e:
        if kafka_error_code(e) in (KafkaError.GROUP_ID_NOT_FOUND, KafkaError._NOENT):
            return []
        raise
    return [f"{m.client_id}@{m.host}" for m in desc.members or []]


def _offsets_for(admin: Any, tps: list[tuple[str, int]], spec: Any, timeout: float) -> dict[tuple[str, int], int]:
    if not tps:
        return {}
    futs = admin.list_offsets({TopicPartition(t, p): spec for t, p in tps}, request_timeout=timeout)
    return {(tp.topic, tp.partition): int(f.result(timeout).offset) for tp, f in futs.items()}


def plan(app: Any, admin: Any, position: Position, include_dlq: bool = False, timeout: float = 30.0) -> ResetPlan:
    """What a reset of ``app`` would do (reads the cluster, changes nothing)."""
    s = app.settings
    existing = admin.list_topics(timeout=10).topics
    inputs = input_topics(app)
    p = ResetPlan(s.application_id, s.application_id, position, inputs)
    p.missing_inputs = [t for t in inputs if t not in existing]
    tps = [(t, part) for t in inputs if t in existing for part in sorted(existing[t].partitions)]
    earliest = _offsets_for(admin, tps, OffsetSpec.earliest(), timeout)
    latest = _offsets_for(admin, tps, OffsetSpec.latest(), timeout)
    if position.kind == "earliest":
        p.offsets = earliest
    elif position.kind == "offset":
        assert position.value is not None
        p.offsets = {tp: min(max(position.value, earliest[tp]), latest[tp]) for tp in tps}
    else:
        assert position.value is not None
        at = _offsets_for(admin, tps, OffsetSpec.for_timestamp(position.value), timeout)
        # No record at or after the time: the end (nothing to reprocess there).
        p.offsets = {tp: (o if o >= 0 else latest[tp]) for tp, o in at.items()}
    p.delete_topics = [t for t in internal_topics(app, include_dlq) if t in existing]
    if include_dlq:
        from kstreamlet.tools.dlq import replay_group

        p.delete_groups = [replay_group(s.application_id)]
    state = Path(s.state_dir) / s.application_id
    p.state_dir, p.state_dir_exists = str(state), state.exists()
    return p


def execute(admin: Any, p: ResetPlan, timeout: float = 30.0) -> None:
    """Carry out a plan (checks for active members again first)."""
    members = active_members(admin, p.group)
    if members:
        raise ToolError(_members_message(p.group, members))
    if p.offsets:
        req = ConsumerGroupTopicPartitions(p.group, [TopicPartition(t, part, o) for (t, part), o in sorted(p.offsets.items())])
        fut = admin.alter_consumer_group_offsets([req], request_timeout=timeout)[p.group]
        try:
            res = fut.result(timeout)
        except KafkaException as e:
            raise ToolError(f"cannot reset the offsets of group {p.group}: {kafka_error_text(e)}") from None
        bad = [f"{tp.topic}[{tp.partition}]: {tp.error.str()}" for tp in res.topic_partitions if tp.error is not None]
        if bad:
            raise ToolError(f"cannot reset offsets of group {p.group}: {'; '.join(bad)}")
    topics_tool.delete(admin, p.delete_topics, timeout)
    for g in p.delete_groups:
        try:
            admin.delete_consumer_groups([g], request_timeout=timeout)[g].result(timeout)
        except KafkaException as e:
            if kafka_error_code(e) not in (KafkaError.GROUP_ID_NOT_FOUND, KafkaError._NOENT):
                raise ToolError(f"cannot delete group {g}: {kafka_error_text(e)}") from None
    if p.state_dir_exists:
        shutil.rmtree(p.state_dir, ignore_errors=False)


def _members_message(group: str, members: list[str]) -> str:
    return (f"refusing to reset: consumer group {group} has {len(members)} active member(s) "
            f"({', '.join(sorted(members)[:5])}{', ...' if len(members) > 5 else ''}); stop every instance of the "
            "app first")


def reset(app: Any, position: Position | None = None, include_dlq: bool = False, dry_run: bool = False,
          admin: Any = None) -> ResetPlan:
    """Reset ``app`` (see the module docstring); ToolError (exit 2) while its group has members.
    Returns the plan (carried out unless ``dry_run``)."""
    admin = admin or admin_client(app.settings)
    members = active_members(admin, app.settings.application_id)
    if members:
        raise ToolError(_members_message(app.settings.application_id, members), EXIT_REFUSED)
    p = plan(app, admin, position or Position(), include_dlq)
    if not dry_run:
        execute(admin, p)
    return p


def position_from_args(args: argparse.Namespace, now_ms: int | None = None) -> Position:
    given = [n for n in ("to_datetime", "by_duration", "to_offset", "to_earliest")
             if getattr(args, n) not in (None, False)]
    if len(given) > 1:
        raise ToolError("give at most one of --to-earliest, --to-datetime, --by-duration, --to-offset")
    try:
        if args.to_datetime is not None:
            return Position("timestamp", parse_datetime_ms(args.to_datetime))
        if args.by_duration is not None:
            now = int(time.time() * 1000) if now_ms is None else now_ms
            return Position("timestamp", now - int(parse_duration(args.by_duration) * 1000))
    except ValueError as e:
        raise ToolError(str(e)) from None
    if args.to_offset is not None:
        if args.to_offset < 0:
            raise ToolError("--to-offset must be >= 0")
        return Position("offset", args.to_offset)
    return Position("earliest")


@command
def _cmd_reset(args: argparse.Namespace) -> int:
    position = position_from_args(args)
    app = load_tool_app(args.app, args.bootstrap_servers)
    p = reset(app, position, include_dlq=args.include_dlq, dry_run=args.dry_run)
    if args.json:
        print(dumps({"dry_run": args.dry_run, **p.to_json()}))
    else:
        print(("dry run, nothing changed: " if args.dry_run else "done: ") + p.to_text())
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register ``kstreamlet reset``."""
    r = subparser(subparsers, "reset", "reset an app: input offsets, internal topics, local state", """
  kstreamlet reset services.wordcount:app --dry-run
  kstreamlet reset services.wordcount:app                       # reprocess everything
  kstreamlet reset myapp:app --to-datetime 2026-01-02T00:00:00Z
  kstreamlet reset myapp:app --by-duration PT1H                 # the last hour again (or: 3600)
  kstreamlet reset myapp:app --to-offset 0 --include-dlq --json
""", description="Reset an application like kafka-streams-application-reset: its group's input offsets go to "
                 "the earliest offset (or --to-datetime / --by-duration / --to-offset), its repartition and "
                 "changelog topics are deleted (the DLQ only with --include-dlq), and its local state directory "
                 "state_dir/<application_id> on this machine is wiped. Refuses (exit 2) while the group has "
                 "active members.")
    r.add_argument("app", help="module:attribute of the App")
    r.add_argument("--to-earliest", action="store_true", help="inputs to their earliest offsets (the default)")
    r.add_argument("--to-datetime", metavar="ISO", help="inputs to the first offset at or after this time "
                   "(ISO 8601; UTC unless it has an offset)")
    r.add_argument("--by-duration", metavar="DURATION", help="inputs to now minus DURATION (PT1H, P1DT2H, or seconds)")
    r.add_argument("--to-offset", type=int, metavar="N", help="inputs to offset N of every partition (clamped)")
    r.add_argument("--include-dlq", action="store_true", help="also delete the dead-letter topic and the DLQ replay group")
    r.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    add_connection_args(r)
    add_json_arg(r, "the plan")
    r.set_defaults(fn=_cmd_reset)


__all__ = ["add_parser", "Position", "ResetPlan", "input_topics", "internal_topics", "active_members", "plan",
           "execute", "reset", "position_from_args"]
