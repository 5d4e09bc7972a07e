"""Interactive queries: a store's committed state, read where it lives, from any instance.

:class:`QueryService` (one per member) answers the HTTP routes ``/stores...`` and
``/metadata...`` (served by observability/http.py on the app's port) and backs
:class:`StoreQuery` (``app.query(store)``). What it reads and when:

- **Committed state only.** A store is a write buffer of the open checkpoint over a backend
  (state/store.py); the buffer is applied to the backend only after the checkpoint committed.
  Queries read the backend (RocksDB reads are thread-safe), never the buffer.
- **Only fully restored tasks of this member.** The task manager keeps ``queryable`` (tasks
  not restoring) under ``query_lock``; a task leaves it, under the lock, before its stores are
  closed (revocation, loss, rebuild, shutdown), so a read never meets a closed store and a
  restoring or moved task is never read. Otherwise the answer is 503 with ``Retry-After``.
- **Routing.** Key -> partition is murmur2 of the key serialized with the store's key serde
  (kstreamlet/partitioner.py); partition -> instance comes from the group's assignment, instance
  -> URL from the metadata topic (query/metadata.py). A key owned elsewhere is **forwarded**
  (urllib, ``forward_timeout``) and the owner's answer returned; a forwarded request is never
  forwarded again (header ``X-Kstreamlet-Forwarded``). An owner that cannot be reached, or no
  owner known (rebalance in progress), is 503 with ``Retry-After``. Scans (``all``, ``range``)
  fan out: every partition is read from its owner, and a single unavailable partition makes
  the whole answer 503 (never a partial one).
- Owners send raw committed entries (``raw=1``, internal); the instance that was asked
  decodes them with the store's serdes (kstreamlet/state/inspect.py's decoders, as ``kstreamlet state``).
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import structlog

from kstreamlet.query.metadata import InstanceInfo, MetadataBoard, TaskKey
from kstreamlet.partitioner import partition_of
from kstreamlet.state.codec import key_prefix, prefix_end
from kstreamlet.errors import InspectionError
from kstreamlet.observability.access import HttpAccess
from kstreamlet.state.inspect import (
    Entry,
    StoreInfo,
    decode,
    discover_stores,
    find_store,
    jsonable,
    parse_key,
    store_key_matches,
)

log = structlog.get_logger("kstreamlet.query")

#: Seconds a client should wait before asking again (rebalance, restore, owner unreachable).
RETRY_AFTER = 1
#: Header of a request one instance forwarded to another: answered from local state only.
FORWARDED = "X-Kstreamlet-Forwarded"

Raw = dict[bytes, tuple[int, bytes]]


class QueryError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class QueryUnavailable(QueryError):
    """The state cannot be read now (rebalance, restore, owner unreachable): ask again after
    ``retry_after`` seconds (HTTP 503 + ``Retry-After``)."""

    status = 503
    retry_after = RETRY_AFTER


class NotFound(QueryError):
    status = 404


class BadQuery(QueryError):
    status = 400


class TaskManagerLike(Protocol):
    tasks: dict[tuple[int, int], Any]
    queryable: dict[tuple[int, int], Any]
    query_lock: threading.Lock


@dataclass
class _Route:
    info: StoreInfo
    subtopology: int
    source_topic: str


class _AppView:
    """What kstreamlet/state/inspect.py's store discovery asks of an app."""

    def __init__(self, settings: Any, topology: Any) -> None:
        self.settings = settings
        self._topology = topology

    def topology(self) -> Any:
        return self._topology


def advertised_url(configured: str | None, port: int, worker_index: int = 0, scheme: str = "http") -> str:
    """This instance's query URL: ``advertised_url`` (its port + the worker index under
    ``--workers``: worker *i* serves on ``http_port + i``), else ``<scheme>://<hostname>:<port>``
    (``https`` when the port serves TLS)."""
    if not configured:
        return f"{scheme}://{socket.gethostname()}:{port}"
    url = configured.rstrip("/")
    if worker_index:
        parts = urllib.parse.urlsplit(url)
        if parts.port is not None:
            host = parts.hostname or ""
            netloc = f"[{host}]" if ":" in host else host
            url = urllib.parse.urlunsplit(parts._replace(netloc=f"{netloc}:{parts.port + worker_index}"))
    return url


class QueryService:
    """The queries of one member (see the module docstring)."""

    def __init__(self, settings: Any, topology: Any, tasks: TaskManagerLike, partitions_of: Callable[[str], int],
                 instance_id: str, url: str | None = None, unavailable: Callable[[], str | None] = lambda: None,
                 forward_timeout: float = 5.0, access: HttpAccess | None = None) -> None:
        self.settings = settings
        self.topology = topology
        self.tasks = tasks
        self.partitions_of = partitions_of
        self.instance_id = instance_id
        #: The token and certificate a forwarded query presents to the owner (observability/access.py).
        self.access = access or HttpAccess()
        self._client_tls = self.access.client_context()
        self.url = url
        self.unavailable = unavailable
        self.forward_timeout = forward_timeout
        self.board: MetadataBoard | None = None
        self._stores: dict[str, StoreInfo] | None = None
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()

    # --- stores ------------------------------------------------------------------------------

    def stores(self) -> dict[str, StoreInfo]:
        """The app's stores (learnt once, as ``kstreamlet state stores`` does)."""
        with self._lock:
            if self._stores is None:
                try:
                    self._stores = discover_stores(_AppView(self.settings, self.topology))
                except InspectionError as e:
                    raise QueryError(str(e)) from None
                for st in self.topology.subtopologies:
                    names = {n.name for n in st.nodes}
                    for info in self._stores.values():
                        if info.operator in names:
                            self._routes[info.name] = _Route(info, st.id, next(iter(st.sources)))
            return self._stores

    def route(self, store: str) -> _Route:
        try:
            info = find_store(self.stores(), store)
        except InspectionError as e:
            raise NotFound(str(e)) from None
        r = self._routes.get(info.name)
        if r is None:
            raise NotFound(f"store {store!r} belongs to no sub-topology")
        return r

    def partitions(self, r: _Route) -> int:
        return self.partitions_of(r.source_topic)

    def partition_of(self, r: _Route, key_bytes: bytes) -> int:
        return partition_of(key_bytes, self.partitions(r))

    # --- ownership ---------------------------------------------------------------------------

    def local_tasks(self) -> list[TaskKey]:
        """The task keys of this member (a snapshot; the loop thread changes the dict meanwhile)."""
        for _ in range(10):
            try:
                return sorted(self.tasks.tasks)
            except RuntimeError:
                continue
        return sorted(dict(self.tasks.tasks))

    def owner(self, task: TaskKey) -> InstanceInfo | None:
        """None: this member runs the task; else the live instance the group assigned it to."""
        if task in self.tasks.tasks:
            return None
        if self.board is None:
            raise QueryUnavailable(f"task {task[0]}_{task[1]} is not on this instance and no other instance is "
                                   "known (no HTTP port, or the query metadata is not read)")
        owner = self.board.owners().get(task)
        if owner is None or owner.instance == self.instance_id:
            raise QueryUnavailable(f"no instance owns task {task[0]}_{task[1]} now (a rebalance is in progress)")
        return owner

    # --- reading -----------------------------------------------------------------------------

    def _check_available(self) -> None:
        reason = self.unavailable()
        if reason:
            raise QueryUnavailable(f"this instance cannot serve queries now: {reason}")

    def read_local(self, r: _Route, partitions: Iterable[int], prefix: bytes | None) -> Raw:
        """Committed entries (of ``prefix``, or all) of this member's partitions of the store; 503
        when one is restoring or not (any more) here."""
        self._check_available()
        out: Raw = {}
        tm = self.tasks
        for p in partitions:
            key = (r.subtopology, p)
            with tm.query_lock:  # the loop thread takes it before closing a task's stores
                task = tm.queryable.get(key)
                if task is None:
                    what = "restoring its state" if key in tm.tasks else "not assigned to this instance"
                    raise QueryUnavailable(f"partition {p} of store {r.info.name} is {what}")
                store = task.stores.get(r.info.name)
                if store is None:
                    continue
                out.update(self._scan_backend(store.backend, p, prefix))
        return out

    @staticmethod
    def _scan_backend(backend: Any, partition: int, prefix: bytes | None) -> Raw:
        start, end = (prefix, prefix_end(prefix)) if prefix is not None else (b"", None)
        for attempt in range(3):
            try:
                return {k: (partition, v) for k, v in backend.iter_from(start, end)}
            except RuntimeError:  # the memory backend's dict changed under the scan: read again
                if attempt == 2:
                    raise
        return {}

    def read_remote(self, owner: InstanceInfo, r: _Route, partitions: list[int], prefix: bytes | None) -> Raw:
        q = {"raw": "1", "partitions": ",".join(map(str, partitions))}
        if prefix is not None:
            q["prefix"] = prefix.hex()
        status, headers, body = self.forward(owner, f"/stores/{urllib.parse.quote(r.info.name, safe='')}",
                                             urllib.parse.urlencode(q))
        if status != 200:
            try:
                msg = json.loads(body).get("error", "")
            except ValueError:
                msg = body[:200].decode(errors="replace")
            if status == 503:
                raise QueryUnavailable(f"instance {owner.instance}: {msg}")
            raise QueryError(f"instance {owner.instance} answered {status}: {msg}")
        out: Raw = {}
        for p, k, v in json.loads(body)["entries"]:
            out[bytes.fromhex(k)] = (int(p), bytes.fromhex(v))
        return out

    def read(self, r: _Route, partitions: Iterable[int], prefix: bytes | None, local_only: bool = False) -> Raw:
        """Committed raw entries of ``partitions``, each from its owner (fan-out)."""
        self._check_available()
        local: list[int] = []
        remote: dict[str, tuple[InstanceInfo, list[int]]] = {}
        for p in partitions:
            owner = None if local_only else self.owner((r.subtopology, p))
            if owner is None:
                local.append(p)
            else:
                remote.setdefault(owner.instance, (owner, []))[1].append(p)
        out = self.read_local(r, local, prefix) if local else {}
        for owner, ps in remote.values():
            out.update(self.read_remote(owner, r, ps, prefix))
        return out

    def forward(self, owner: InstanceInfo, path: str, query: str) -> tuple[int, dict[str, str], bytes]:
        """GET ``path?query`` from ``owner``: its status, headers and body; 503 when unreachable."""
        url = f"{owner.url.rstrip('/')}{path}" + (f"?{query}" if query else "")
        req = urllib.request.Request(url, headers={FORWARDED: self.instance_id, **self.access.client_headers()})
        try:
            with urllib.request.urlopen(req, timeout=self.forward_timeout, context=self._client_tls) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers.items()) if e.headers else {}, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise QueryUnavailable(f"the owner {owner.instance} at {owner.url} cannot be reached: "
                                   f"{getattr(e, 'reason', e)}") from None

    # --- the queries -------------------------------------------------------------------------

    def _decode(self, r: _Route, raw: Raw) -> list[Entry]:
        try:
            return decode(r.info, raw)
        except InspectionError as e:
            raise BadQuery(str(e)) from None

    def _keyed(self, r: _Route) -> None:
        if not r.info.decodable:
            raise BadQuery(f"store {r.info.name} ({r.info.kind}) has a layout queries cannot decode")
        if r.info.kind == "operator-list":
            raise BadQuery(f"store {r.info.name} is operator state (one list per partition, no keys): use all()")

    def get(self, r: _Route, key_bytes: bytes, local_only: bool = False) -> tuple[int, list[Entry]]:
        """(partition, the key's decoded committed entries: one, or a window store's windows)."""
        self._keyed(r)
        p = self.partition_of(r, key_bytes)
        if r.info.kind == "timers":
            raw = {k: v for k, v in self.read(r, [p], None, local_only).items()
                   if store_key_matches(r.info, k, key_bytes)}
        else:
            raw = self.read(r, [p], key_prefix(key_bytes), local_only)
        return p, self._decode(r, raw)

    def scan(self, r: _Route, lo: bytes | None = None, hi: bytes | None = None,
             local_only: bool = False) -> list[Entry]:
        """Every committed entry of the store (keys in ``[lo, hi]`` by serialized bytes), from all owners."""
        if not r.info.decodable:
            raise BadQuery(f"store {r.info.name} ({r.info.kind}) has a layout queries cannot decode")
        raw = self.read(r, range(self.partitions(r)), None, local_only)
        entries = self._decode(r, raw)
        if lo is not None or hi is not None:
            entries = [e for e in entries if (lo is None or e.key_bytes >= lo) and (hi is None or e.key_bytes <= hi)]
        return sorted(entries, key=lambda e: (e.key_bytes, e.extra.get("window_start", 0), e.partition))

    def fetch(self, r: _Route, key_bytes: bytes, time_from: int | None, time_to: int | None,
              local_only: bool = False) -> tuple[int, list[Entry]]:
        """A window store's windows of the key whose start is in ``[time_from, time_to]``."""
        if r.info.kind != "window":
            raise BadQuery(f"store {r.info.name} is a {r.info.kind} store, not a window store")
        p, entries = self.get(r, key_bytes, local_only)
        return p, [e for e in entries if (time_from is None or e.extra["window_start"] >= time_from)
                   and (time_to is None or e.extra["window_start"] <= time_to)]

    # --- metadata ----------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        owners = self.board.owners() if self.board is not None else {}
        instances = self.board.instances() if self.board is not None else []
        mine = self.local_tasks()
        stores: dict[str, Any] = {}
        for name, info in self.stores().items():
            r = self._routes.get(name)
            if r is None:
                continue
            n = self.partitions(r)
            by_p: dict[str, str | None] = {}
            for p in range(n):
                if (r.subtopology, p) in mine:
                    by_p[str(p)] = self.instance_id
                else:
                    o = owners.get((r.subtopology, p))
                    by_p[str(p)] = o.instance if o is not None else None
            stores[name] = {"kind": info.kind, "subtopology": r.subtopology, "partitions": n, "owners": by_p}
        listed = [i.to_json() for i in instances if i.instance != self.instance_id]
        me = {"instance": self.instance_id, "url": self.url, "tasks": [list(t) for t in mine]}
        return {"application_id": self.settings.application_id, **me,
                "instances": sorted([me, *[{k: i[k] for k in ("instance", "url", "tasks")} for i in listed]],
                                    key=lambda i: str(i["instance"])),
                "stores": stores}

    def key_metadata(self, r: _Route, key_bytes: bytes) -> dict[str, Any]:
        p = self.partition_of(r, key_bytes)
        owner = self.owner((r.subtopology, p))
        return {"store": r.info.name, "partition": p,
                "instance": self.instance_id if owner is None else owner.instance,
                "url": self.url if owner is None else owner.url}

    # --- HTTP --------------------------------------------------------------------------------

    def handle(self, path: str, query: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """The routes (see docs/operations.md, "Interactive queries"); never raises."""
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        forwarded = any(h.lower() == FORWARDED.lower() for h in headers)
        try:
            body = self._route(path.strip("/").split("/"), params, forwarded)
            return 200, {}, json.dumps(jsonable(body), ensure_ascii=False).encode()
        except QueryError as e:
            extra = {"Retry-After": str(e.retry_after)} if isinstance(e, QueryUnavailable) else {}
            return e.status, extra, json.dumps({"error": e.message}, ensure_ascii=False).encode()

    def _key(self, r: _Route, text: str, params: dict[str, str]) -> bytes:
        try:
            return parse_key(text, r.info.key_serde, params.get("key_hex") in ("1", "true"))
        except InspectionError as e:
            raise BadQuery(str(e)) from None

    @staticmethod
    def _int(params: dict[str, str], name: str) -> int | None:
        v = params.get(name)
        if v is None or v == "":
            return None
        try:
            return int(v)
        except ValueError:
            raise BadQuery(f"{name}={v!r} is not a number (milliseconds)") from None

    def _route(self, parts: list[str], params: dict[str, str], forwarded: bool) -> Any:
        parts = [urllib.parse.unquote(p) for p in parts]
        if parts[0] == "metadata":
            if len(parts) == 1:
                return self.metadata()
            if len(parts) == 3:
                r = self.route(parts[1])
                return {**self.key_metadata(r, self._key(r, parts[2], params)), "key": parts[2]}
            raise NotFound("not found: /metadata or /metadata/<store>/<key>")
        if len(parts) == 1:
            return {"stores": [{"name": s.name, "kind": s.kind, "operator": s.operator, "queryable": s.decodable,
                                "key_serde": s.to_json()["key_serde"], "value_serde": s.to_json()["value_serde"]}
                               for s in self.stores().values()]}
        r = self.route(parts[1])
        if len(parts) == 2:
            if params.get("raw") == "1":  # internal: an instance asking the owner of some partitions
                try:
                    ps = [int(p) for p in params.get("partitions", "").split(",") if p != ""]
                except ValueError:
                    raise BadQuery("partitions must be numbers") from None
                prefix = bytes.fromhex(params["prefix"]) if "prefix" in params else None
                raw = self.read_local(r, ps, prefix)
                return {"entries": [[p, k.hex(), v.hex()] for k, (p, v) in sorted(raw.items())]}
            lo = self._key(r, params["from"], params) if params.get("from") else None
            hi = self._key(r, params["to"], params) if params.get("to") else None
            entries = self.scan(r, lo, hi, local_only=forwarded)
            limit = self._int(params, "limit")
            if limit is not None:
                entries = entries[:limit]
            return {"store": r.info.name, "kind": r.info.kind, "entries": [e.to_json() for e in entries]}
        key_text = parts[2]
        kb = self._key(r, key_text, params)
        if len(parts) == 4 and parts[3] == "window":
            p, entries = self.fetch(r, kb, self._int(params, "from"), self._int(params, "to"), local_only=forwarded)
            return {"store": r.info.name, "key": entries[0].key if entries else key_text, "partition": p,
                    "windows": [{"window_start": e.extra["window_start"], "window_end": e.extra["window_end"],
                                 "value": e.value} for e in entries]}
        if len(parts) != 3:
            raise NotFound("not found: /stores/<store>/<key> or /stores/<store>/<key>/window")
        owner = None if forwarded else self.owner((r.subtopology, self.partition_of(r, kb)))
        p, entries = self.get(r, kb, local_only=forwarded)
        if not entries:
            raise NotFound(f"no committed value for key {key_text!r} in store {r.info.name}")
        base = {"store": r.info.name, "key": entries[0].key, "partition": p,
                "instance": owner.instance if owner is not None else self.instance_id}
        if r.info.kind in ("window", "timers"):
            return {**base, "entries": [e.to_json() for e in entries]}
        return {**base, "value": entries[0].value, **entries[0].extra}

    # --- the Python API ----------------------------------------------------------------------

    def store(self, name: str) -> "StoreQuery":
        return StoreQuery(self, self.route(name))


class StoreQuery:
    """``app.query(store)``: a store's committed state, from whichever instance owns each key.

    Values are decoded with the store's serdes in this process (an owner elsewhere sends the
    committed bytes). Every method raises :class:`QueryUnavailable` (``retry_after`` seconds)
    while a partition it needs is restoring, moving in a rebalance, or its owner is unreachable:
    never a stale or half-restored value."""

    def __init__(self, service: QueryService, route: _Route) -> None:
        self._service = service
        self._route = route
        self.name = route.info.name
        self.kind = route.info.kind

    def _kb(self, key: Any) -> bytes:
        serde = self._route.info.key_serde
        return serde.serialize(key) if serde is not None else bytes(key)

    def get(self, key: Any) -> Any:
        """The key's committed value (None: none). Window stores: the list of ``(start, end,
        value)`` of all its windows (see :meth:`fetch`); timers: the pending timers."""
        _, entries = self._service.get(self._route, self._kb(key))
        if self.kind == "window":
            return [(e.extra["window_start"], e.extra["window_end"], e.value) for e in entries]
        if self.kind == "timers":
            return [e.value for e in entries]
        return entries[0].value if entries else None

    def range(self, key_from: Any = None, key_to: Any = None) -> list[tuple[Any, Any]]:
        """``(key, value)`` of every key with ``key_from <= key <= key_to`` (serialized bytes order;
        None: unbounded), from every partition's owner."""
        lo = self._kb(key_from) if key_from is not None else None
        hi = self._kb(key_to) if key_to is not None else None
        return [(e.key, e.value) for e in self._service.scan(self._route, lo, hi)]

    def all(self) -> list[tuple[Any, Any]]:
        """``(key, value)`` of every key of the store (windows: ``(key, (start, end, value))``)."""
        out = []
        for e in self._service.scan(self._route):
            if self.kind == "window":
                out.append((e.key, (e.extra["window_start"], e.extra["window_end"], e.value)))
            else:
                out.append((e.key, e.value))
        return out

    def fetch(self, key: Any, time_from: int | None = None, time_to: int | None = None) -> list[tuple[int, int, Any]]:
        """Window stores: ``(window_start, window_end, value)`` of the key's windows whose start is
        in ``[time_from, time_to]`` (ms; None: unbounded), as Kafka Streams' ``fetch(key, from, to)``."""
        _, entries = self._service.fetch(self._route, self._kb(key), time_from, time_to)
        return [(e.extra["window_start"], e.extra["window_end"], e.value) for e in entries]


#: The query service of each member running in this process, by application id (app.query()).
_running: dict[str, QueryService] = {}


def register(service: QueryService) -> None:
    _running[service.settings.application_id] = service


def unregister(service: QueryService) -> None:
    if _running.get(service.settings.application_id) is service:
        del _running[service.settings.application_id]


def store_query(application_id: str, store: str) -> StoreQuery:
    """The :class:`StoreQuery` of ``store`` of the member of ``application_id`` running here."""
    service = _running.get(application_id)
    if service is None:
        raise RuntimeError(f"no member of {application_id!r} runs in this process: app.query() works inside the "
                           "process running the app (kstreamlet run, or Member(app, ...).run() in a thread); from "
                           "elsewhere, use the HTTP endpoints /stores/...")
    return service.store(store)
