"""Fused stateless chains: a linear run of context-free operators compiled into one function.

Unfused, every operator of ``stream.map(f).filter(p).map(g).to(out)`` is its own closure and
costs one Python call per record (:mod:`kstreamlet.topology.nodes`). A task compiles a maximal
linear run of such operators — ``map``, ``filter``, ``flat_map``, ``peek`` and the pass-through
merge / branch-head / keyed-head nodes — into a single generated function that calls the user
functions in the same order, bound as locals of a closure::

    def fused(k, v, ts):
        v = f0(v)              # map
        if not f1(v): return   # filter (``continue`` inside a flat_map's loop)
        for v in f2(v):        # flat_map: what follows runs once per element
            f3(k, v)           # peek
            ...terminal

The run ends where the graph stops being a line: a node with several children (they are
called in order, as ``fan_out`` does), a child with several parents (it starts a chain of its
own, compiled once), or a node that is not one of the above (``process``, keyed functions,
async operators, two-phase sinks, a node class that overrides ``compile``: all of them use the
record context, state or timers). Its terminal is inlined when it is a ``branch`` (the same
first-match routing, an ``if``/``elif``/``else`` over the predicates) or a sink on the plain
paths of :meth:`SinkNode.compile` (``push_raw`` / ``push_fast``: the same statements, reading
``task.msg`` for the header propagation of topology/headers.py); any other sink is called.

Only identifiers the generator makes up (``f0``, ``r1``, ``send``, ...) appear in the generated
code; user callables, topics and serializers are passed in as closure variables and never
interpolated. Calls, their order, their arguments and what they raise are the unfused ones, so
an exception reaches the task's error policy unchanged (the dead-letter record is the same) and
outputs sent before it stay sent, as unfused. In a traceback the chain's frame is
``fused_chain`` of the file ``<kstreamlet fused chain: f0=<operator>, ...>``, which names the
operator behind each local. ``describe()`` is unchanged: fusion is a compile detail of a task.

The ``fuse_operators`` setting (env ``KSTREAMLET_FUSE_OPERATORS``, default on) turns it off.
"""

from __future__ import annotations

import linecache
from typing import TYPE_CHECKING, Any, Callable

from kstreamlet.topology.nodes import (
    BranchNode,
    FilterNode,
    FlatMapNode,
    MapNode,
    MergeNode,
    Node,
    PeekNode,
    Push,
    SinkNode,
    fan_out,
)

if TYPE_CHECKING:
    from kstreamlet.api.task import TaskServices as Task

#: Exact node classes fused (a subclass may override ``compile``, so it is never fused).
STAGES: dict[type[Node], str] = {MapNode: "map", FilterNode: "filter", FlatMapNode: "flat_map",
                                 PeekNode: "peek", MergeNode: "merge"}
#: A chain stops before its 16th flat_map (CPython nests at most 20 blocks) or after 64 operators.
MAX_LOOPS = 15
MAX_STAGES = 64

_code_cache: dict[tuple[str, str], Any] = {}


def _stage_kind(n: Node) -> str | None:
    return STAGES.get(type(n))


def chain_of(head: Node) -> list[Node]:
    """The linear run of fusable nodes starting at ``head`` (empty if ``head`` is not fusable)."""
    run: list[Node] = []
    loops = 0
    n = head
    while _stage_kind(n) is not None and len(run) < MAX_STAGES:
        if isinstance(n, FlatMapNode):
            if loops == MAX_LOOPS:
                break
            loops += 1
        run.append(n)
        if len(n.children) != 1:
            break
        nxt = n.children[0]
        if len(nxt.parents) != 1:
            break
        n = nxt
    return run


def compile_chain(task: "Task", head: Node) -> Push | None:
    """One function for the chain starting at ``head``, or None when fusing gains nothing (``head``
    not fusable, or a single call either way): the task then compiles ``head`` as usual."""
    run = chain_of(head)
    if not run:
        return None
    last = run[-1]
    nxt = last.children[0] if len(last.children) == 1 and len(last.children[0].parents) == 1 else None
    binds: dict[str, Any] = {}
    names: list[str] = []  # "f0=map-3": which operator each local is, for the file name

    def bind(prefix: str, value: Any, node: Node) -> str:
        name = f"{prefix}{len(binds)}"
        binds[name] = value
        names.append(f"{name}={node.name}")
        return name

    body: list[str] = []
    depth = 0  # flat_map loops open
    user_stages = 0
    for n in run:
        ind = "    " * (depth + 2)
        if isinstance(n, MapNode):
            body.append(f"{ind}v = {bind('f', n.fn, n)}(v)")
        elif isinstance(n, FilterNode):
            body.append(f"{ind}if not {bind('f', n.pred, n)}(v):")
            body.append(f"{ind}    {'continue' if depth else 'return'}")
        elif isinstance(n, FlatMapNode):
            body.append(f"{ind}for v in {bind('f', n.fn, n)}(v):")
            depth += 1
        elif isinstance(n, PeekNode):
            body.append(f"{ind}{bind('f', n.fn, n)}(k, v)")
        else:
            continue  # a pass-through merge: nothing per record
        user_stages += 1
    ind = "    " * (depth + 2)
    sink = nxt if type(nxt) is SinkNode and nxt.is_plain(task) else None  # type: ignore[union-attr]
    branch = nxt if type(nxt) is BranchNode else None
    if user_stages + (sink is not None or branch is not None) < 2:
        return None  # one call fused or not: compile as usual (nothing was compiled yet)
    plain = sink.plain_send(task) if isinstance(sink, SinkNode) else None
    if plain is not None and sink is not None:
        send, topic, vser, carry = plain
        binds.update(send=send, topic=topic, carry=carry, task=task)
        names.append(f"sink={sink.name}")
        value = f"{bind('s', vser, sink)}(v)" if vser is not None else "v"
        body += [f"{ind}m = task.msg",
                 f"{ind}h = m.headers() if m is not None else None",
                 f"{ind}send(topic, k, {value}, ts, -1, carry(m, h) if h else None)"]
    elif isinstance(branch, BranchNode):
        for i, (pred, cs) in enumerate(zip(branch.predicates, branch.branch_children)):
            out = bind("r", fan_out([task.compiled(c) for c in cs]), branch)
            if pred is None:
                if i == 0:
                    body.append(f"{ind}{out}(k, v, ts)")
                else:
                    body += [f"{ind}else:", f"{ind}    {out}(k, v, ts)"]
                break
            body += [f"{ind}{'if' if i == 0 else 'elif'} {bind('p', pred, branch)}(v):", f"{ind}    {out}(k, v, ts)"]
        if not branch.predicates:
            body.append(f"{ind}pass")  # a branch without branches drops everything
    else:
        child = last.compile_children(task)
        binds["nxt"] = child
        body.append(f"{ind}nxt(k, v, ts)")
    params = ", ".join(binds)
    src = "\n".join([f"def make({params}):", "    def fused_chain(k, v, ts):", *body, "    return fused_chain", ""])
    filename = f"<kstreamlet fused chain: {', '.join(names)}>"
    make: Callable[..., Push] = _make(src, filename)
    return make(**binds)


def _make(src: str, filename: str) -> Callable[..., Push]:
    """The ``make`` factory of generated source ``src`` (compiled once per source and file name)."""
    key = (src, filename)
    code = _code_cache.get(key)
    if code is None:
        code = compile(src, filename, "exec")
        _code_cache[key] = code
        # So a traceback through the chain shows its lines.
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    namespace: dict[str, Any] = {"__builtins__": {}}
    exec(code, namespace)
    return namespace["make"]  # type: ignore[no-any-return]
