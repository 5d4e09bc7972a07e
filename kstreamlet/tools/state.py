"""``kstreamlet state stores | get | scan module:app``: a store's committed contents, decoded.

A store's contents are read from its changelog ``<application_id>-<store>-changelog`` (so this
works from any machine, while the app runs or not), with ``isolation.level=read_committed``:
the latest committed value per key, tombstones removed — exactly what a restoring task would
load. Keys and values are decoded with the store's serdes, which are learnt from the app itself:
each keyed operator's function is copied and opened (``open()``) against a recording context that
notes the state it declares (as the runtime does for a task), so ``open()`` must not need more
than declaring state.

Store kinds and how they are decoded (layouts: :mod:`kstreamlet.state.codec`, :mod:`kstreamlet.state.keyed`):

- ``value`` / ``reducing`` (also ``count``/``sum``/``min``/``max``/``reduce``/``aggregate``, whose
  store is ``<operator>-value``), ``aggregating`` (shown as ``get_result(accumulator)``), ``list``,
  ``map`` (the entries of a key), with TTL (expired entries are left out, as the state never
  returns them);
- ``operator-list`` (operator and union list state: one list per partition);
- ``window`` (``<operator>-windows`` of time windows: key, window start/end, the window's
  accumulator or element list; ``null`` after a purging trigger);
- ``timers`` (``<operator>-timers``: key, time domain and timestamp of each pending timer);
- not decodable, shown with ``--raw`` only: ``join-buffer`` (interval join buffers), ``sink``
  (two-phase-commit sink committables) and ``raw`` (other operators' own layouts).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from kstreamlet.config import Settings
from kstreamlet.runtime.topics import end_offset
from kstreamlet.state.inspect import (
    DECODABLE,
    Entry,
    StoreInfo,
    decode,
    discover_stores,
    find_store,
    parse_key,
    store_key_matches,
)
from kstreamlet.tools.common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    ToolError,
    add_connection_args,
    add_json_arg,
    client_config,
    command,
    dumps,
    load_tool_app,
    subparser,
)

__all__ = ["DECODABLE", "Entry", "StoreInfo", "decode", "discover_stores", "find_store", "parse_key",
           "store_key_matches", "read_changelog", "contents", "add_parser"]


def read_changelog(settings: Settings, topic: str, timeout: float = 60.0) -> dict[bytes, tuple[int, bytes]]:
    """Latest committed value per key of every partition of ``topic`` (``{key: (partition, value)}``),
    tombstones removed; read with ``read_committed`` up to the last stable offset as of the start."""
    c = Consumer({**client_config(settings), "group.id": f"kstreamlet-tools-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "isolation.level": "read_committed", "enable.partition.eof": True,
                  "auto.offset.reset": "earliest"})
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            raise ToolError(f"changelog {topic} does not exist (the store has no committed state yet, or the app "
                            "was reset)", EXIT_NOT_FOUND)
        parts = sorted(md.partitions)
        ends = {p: end_offset(c, topic, p) for p in parts}
        todo = {p for p in parts if ends[p] > 0}
        out: dict[bytes, tuple[int, bytes]] = {}
        if not todo:
            return out
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise ToolError(f"could not read {topic} partitions {sorted(todo)} to their end in {timeout:g}s", 1)
            for m in c.consume(5000, 0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(m.partition())
                        continue
                    raise ToolError(f"reading {topic}: {err.str()}", 1)
                k = m.key()
                if k is None:
                    continue
                part, offset, value = int(m.partition() or 0), int(m.offset() or 0), m.value()
                if value is None:
                    out.pop(k, None)
                else:
                    out[k] = (part, value)
                if offset + 1 >= ends[part]:
                    todo.discard(part)
            if todo:
                for pos in c.position([TopicPartition(topic, p) for p in todo]):
                    if pos.offset >= 0 and pos.offset >= ends[pos.partition]:
                        todo.discard(pos.partition)
        return out
    finally:
        c.close()


def contents(app: Any, store: str, key: bytes | None = None, raw: bool = False,
             timeout: float = 60.0) -> tuple[StoreInfo, list[Entry]]:
    """The decoded committed entries of ``store`` (of one serialized key when ``key`` is given);
    with ``raw`` undecoded (key and value bytes) for any store kind."""
    info = find_store(discover_stores(app), store)
    if not raw and not info.decodable:
        decode(info, {})  # raises: says which kind and suggests --raw
    entries = read_changelog(app.settings, info.changelog, timeout)
    if key is not None:
        entries = {k: v for k, v in entries.items() if store_key_matches(info, k, key)}
    if raw:
        return info, [Entry(k, v, p, k) for k, (p, v) in sorted(entries.items())]
    return info, decode(info, entries)


# --- commands ---------------------------------------------------------------------------------------

@command
def _cmd_stores(args: argparse.Namespace) -> int:
    app = load_tool_app(args.app, args.bootstrap_servers)
    stores = discover_stores(app)
    if args.json:
        print(dumps([s.to_json() for s in stores.values()]))
    else:
        for s in stores.values():
            j = s.to_json()
            print(f"{s.name}\t{s.kind}{'' if s.decodable else ' (not decodable)'}\tkey={j['key_serde']}"
                  f"\tvalue={j['value_serde']}\tchangelog={s.changelog}")
    return EXIT_OK


def _print(entries: list[Entry], as_json: bool) -> None:
    for e in entries:
        print(dumps(e.to_json()) if as_json else e.to_text())


@command
def _cmd_get(args: argparse.Namespace) -> int:
    app = load_tool_app(args.app, args.bootstrap_servers)
    info = find_store(discover_stores(app), args.store)
    kb = parse_key(args.key, info.key_serde, args.key_hex)
    _, entries = contents(app, info.name, key=kb, raw=args.raw)
    if not entries:
        print(f"kstreamlet: no committed value for key {args.key!r} in store {info.name}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json and len(entries) == 1 and info.kind not in ("window", "timers"):
        print(dumps(entries[0].to_json()))
    else:
        _print(entries, args.json)
    return EXIT_OK


@command
def _cmd_scan(args: argparse.Namespace) -> int:
    app = load_tool_app(args.app, args.bootstrap_servers)
    info, entries = contents(app, args.store, raw=args.raw)
    if args.limit is not None:
        entries = entries[:args.limit]
    _print(entries, args.json)
    if not args.json:
        print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in store {info.name} ({info.kind}, "
              f"changelog {info.changelog})", file=sys.stderr)
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register ``kstreamlet state ...``."""
    top = subparsers.add_parser(
        "state", help="look at an app's state stores (read from their changelogs, decoded)",
        description="A store's committed contents, read from its changelog with read_committed (works from any "
                    "machine, while the app runs or not) and decoded with the store's serdes.")
    sub = top.add_subparsers(dest="state_cmd", required=True)

    s = subparser(sub, "stores", "list the app's stores, their kinds, serdes and changelogs", """
  IN_TOPIC=lines OUT_TOPIC=counts kstreamlet state stores services.wordcount:app
""")
    s.add_argument("app", help="module:attribute of the App")
    add_connection_args(s)
    add_json_arg(s)
    s.set_defaults(fn=_cmd_stores)

    g = subparser(sub, "get", "the committed value of one key", """
  kstreamlet state get services.wordcount:app counts-value hello
  kstreamlet state get services.wordcount:app counts hello --json     # operator name: its one store
  kstreamlet state get myapp:app by-user-value '{"id": 7}'            # JSON key serde
  kstreamlet state get myapp:app totals-value 00ff --key-hex
""", description="The committed value of KEY in STORE (exit 1 when it has none). KEY is parsed with the store's "
                 "key serde: str/bytes as is, int64 a number, json a JSON document (other text: a JSON string).")
    g.add_argument("app", help="module:attribute of the App")
    g.add_argument("store", help="store name (see `state stores`), or an operator name with one store")
    g.add_argument("key")
    g.add_argument("--key-hex", action="store_true", help="KEY is the hex of the serialized key bytes")
    g.add_argument("--raw", action="store_true", help="print undecoded bytes (for any store kind)")
    add_connection_args(g)
    add_json_arg(g, "the entry as JSON (windows and timers: one object per line)")
    g.set_defaults(fn=_cmd_get)

    sc = subparser(sub, "scan", "every committed key and value of a store", """
  kstreamlet state scan services.wordcount:app counts-value
  kstreamlet state scan services.wordcount:app counts --json | jq -s 'map({(.key): .value}) | add'
  kstreamlet state scan myapp:app window-aggregate-0-windows --limit 20
""")
    sc.add_argument("app", help="module:attribute of the App")
    sc.add_argument("store", help="store name (see `state stores`), or an operator name with one store")
    sc.add_argument("--limit", type=int, help="at most this many entries (in key-byte order)")
    sc.add_argument("--raw", action="store_true", help="print undecoded bytes (for any store kind)")
    add_connection_args(sc)
    add_json_arg(sc, "one JSON object per entry (JSON lines)")
    sc.set_defaults(fn=_cmd_scan)


__all__ = ["add_parser", "StoreInfo", "Entry", "discover_stores", "find_store", "read_changelog", "decode",
           "parse_key", "contents"]
