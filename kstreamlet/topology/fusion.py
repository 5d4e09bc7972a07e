"""Fused stateless chains: a linear run of context-free operators compiled into one function.

Unfused, every operator of ``stream.map(f).filter(p).map(g).to(out)`` is its own closure and
costs one Python call per record (:mod:`kstreamlet.topology.nodes`). A task compiles a maximal
linear run of such operators — ``map``, ``filter``, ``flat_map``, ``peek`` and the pass-through
merge / branch-head / keyed-head nodes — into a single generated function that calls the user
functions in the same order, bound as locals of a closure::

    def fused_chain(k, v, ts):
        v = f0(v)              # map
        if not f1(v): return   # filter (``continue`` inside a flat_map's loop)
        for v in f2(v):        # flat_map: what follows runs once per element
            f3(k, v)           # peek
            ...terminal

When a source (without watermarks) feeds such a chain alone, the task's per-record entry
``on_message(m)`` is generated with it (:func:`compile_source`): ``task.msg = m``, the key, value
and timestamp (deserialized by the task's own ``decode``), then the chain — one call per record
from the task manager's loop, plus the user functions and ``send``.

The run ends where the graph stops being a line: a node with several children (they are
called in order, as ``fan_out`` does), a child with several parents (it starts a chain of its
own, compiled once), or a node that is not one of the above (``process``, keyed functions,
async operators, two-phase sinks, a node class that overrides ``compile``: all of them use the
record context, state or timers). Its terminal is inlined when it is a ``branch`` (the same
first-match routing, an ``if``/``elif``/``else`` over the predicates) or a topic sink: the
statements of the push :meth:`SinkNode.compile` would pick, with the same pieces
(:meth:`SinkNode.parts`: serializers, ``key_fn``, partitioner, and the headers of
topology/headers.py from ``task.msg``); otherwise the chain calls its children's pushes.

Only identifiers the generator makes up (``f0``, ``r1``, ``send``, ...) appear in the generated
code; user callables, topics and serializers are passed in as closure variables and never
interpolated. Calls, their order, their arguments and what they raise are the unfused ones, so
an exception reaches the task's error policy unchanged (the dead-letter record is the same) and
outputs sent before it stay sent, as unfused. In a traceback the chain's frame is
``fused_chain`` of the file ``<kstreamlet fused chain <crc32>: f0=<operator>, ...>``, which names the
operator behind each local. ``describe()`` is unchanged: fusion is a compile detail of a task.

The ``fuse_operators`` setting (env ``KSTREAMLET_FUSE_OPERATORS``, default on) turns it off.
"""

from __future__ import annotations

import linecache
import zlib
from collections import OrderedDict
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
    SinkParts,
    SourceNode,
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

#: Generated factories by (source, file name), least recently used first.
_makers: "OrderedDict[tuple[str, str], Callable[..., Push]]" = OrderedDict()
MAX_CACHED = 256


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
    return _generate(task, run, run[-1], "fused_chain(k, v, ts)", [], {}, min_gain=2)


def compile_source(task: "Task", src: SourceNode,
                   decode: Callable[[Any], tuple[Any, Any, int]] | None) -> Callable[[Any], None] | None:
    """``on_message(m)`` of a source (without watermarks) and the chain after it, as one function:
    the task's own prologue (``task.msg = m``, then ``decode(m)``, or without serdes the raw key,
    value and timestamp: processing time when the record has none), then the chain. None when the
    source's records do not go down a chain of their own (several children, or a child with several
    parents) or nothing would be fused."""
    if len(src.children) != 1 or len(src.children[0].parents) != 1:
        return None
    run = chain_of(src.children[0])
    binds: dict[str, Any] = {"task": task}
    if decode is None:
        prologue = ["task.msg = m", "tstype, ts = m.timestamp()", "k = m.key()", "v = m.value()",
                    "if not tstype:", "    ts = task.clock()"]
    else:
        binds["decode"] = decode
        prologue = ["task.msg = m", "k, v, ts = decode(m)"]
    return _generate(task, run, run[-1] if run else src, "fused_source(m)", prologue, binds, min_gain=1)


def _generate(task: "Task", run: list[Node], last: Node, signature: str, prologue: list[str],
              binds: dict[str, Any], min_gain: int) -> Any:
    """The function ``signature`` of ``prologue`` then the ``run`` of operators, then what follows
    ``last``; None if fewer than ``min_gain`` calls would be saved."""
    nxt = last.children[0] if len(last.children) == 1 and len(last.children[0].parents) == 1 else None
    terminal = nxt if type(nxt) in (SinkNode, BranchNode) else None
    if sum(type(n) is not MergeNode for n in run) + (terminal is not None) < min_gain:
        return None  # as many calls fused or not: compile as usual (nothing was compiled yet)

    names: list[str] = []  # "f0=map-3": the operator behind each local, for the file name

    def bind(prefix: str, value: Any, node: Node) -> str:
        name = f"{prefix}{len(names)}"
        binds[name] = value
        names.append(f"{name}={node.name}")
        return name

    body = [f"        {line}" for line in prologue]
    depth = 0  # flat_map loops open
    for n in run:
        ind = "    " * (depth + 2)
        if isinstance(n, MapNode):
            body.append(f"{ind}v = {bind('f', n.fn, n)}(v)")
        elif isinstance(n, FilterNode):
            body += [f"{ind}if not {bind('f', n.pred, n)}(v):", f"{ind}    {'continue' if depth else 'return'}"]
        elif isinstance(n, FlatMapNode):
            body.append(f"{ind}for v in {bind('f', n.fn, n)}(v):")
            depth += 1
        elif isinstance(n, PeekNode):
            body.append(f"{ind}{bind('f', n.fn, n)}(k, v)")
        # a MergeNode passes records through: nothing per record
    ind = "    " * (depth + 2)
    if isinstance(terminal, SinkNode):
        names.append(f"sink={terminal.name}")
        body += _sink_lines(terminal.parts(task), task, ind, binds)
    elif isinstance(terminal, BranchNode):
        for i, (pred, cs) in enumerate(zip(terminal.predicates, terminal.branch_children)):
            out = bind("r", fan_out([task.compiled(c) for c in cs]), terminal)
            if pred is None:  # the default branch: what no earlier predicate took
                body += [f"{ind}{out}(k, v, ts)"] if i == 0 else [f"{ind}else:", f"{ind}    {out}(k, v, ts)"]
                break
            body += [f"{ind}{'if' if i == 0 else 'elif'} {bind('p', pred, terminal)}(v):", f"{ind}    {out}(k, v, ts)"]
        if not terminal.predicates:
            body.append(f"{ind}pass")  # a branch without branches drops everything
    else:
        binds["nxt"] = last.compile_children(task)
        body.append(f"{ind}nxt(k, v, ts)")
    fn = signature.split("(")[0]
    src = "\n".join([f"def make({', '.join(binds)}):", f"    def {signature}:", *body, f"    return {fn}", ""])
    # The file name names the operator behind each local; the source's checksum keeps two chains
    # of equally named operators apart in linecache.
    make = _make(src, f"<kstreamlet fused chain {zlib.crc32(src.encode()):08x}: {', '.join(names)}>")
    return make(**binds)


def _sink_lines(parts: SinkParts, task: "Task", ind: str, binds: dict[str, Any]) -> list[str]:
    """The statements of :meth:`SinkNode.compile`'s push for these parts, in its order: the new key
    (``key_fn``), the partition, the input's headers, then ``send`` (serializers in its arguments)."""
    binds.update(send=parts.send, topic=parts.topic)
    lines = []
    k = "k"
    if parts.key_fn is not None:
        k = "k2"  # not k: a later element of a flat_map must still see the input's key
        binds["key_fn"] = parts.key_fn
        lines.append(f"{ind}k2 = key_fn(v)")
    part = "-1"
    if parts.partitioner is not None:
        part = "part"
        binds.update(partitioner=parts.partitioner, n_partitions=parts.n_partitions)
        lines.append(f"{ind}part = partitioner({k}, v, n_partitions)")
    kx, vx = k, "v"
    if parts.kser is not None:
        binds["kser"], kx = parts.kser, f"kser({k})"
    if parts.vser is not None:
        binds["vser"], vx = parts.vser, "vser(v)"
    if parts.hdrs is None:
        binds.update(task=task, carry=parts.carry)
        lines += [f"{ind}m = task.msg",
                  f"{ind}h = m.headers() if m is not None else None",
                  f"{ind}send(topic, {kx}, {vx}, ts, {part}, carry(m, h) if h else None)"]
    else:
        binds["hdrs"] = parts.hdrs
        lines.append(f"{ind}send(topic, {kx}, {vx}, ts, {part}, hdrs({k}, v))")
    return lines


def _make(src: str, filename: str) -> Callable[..., Push]:
    """The ``make`` factory of generated source ``src``: compiled once per source and file name
    (every task of a sub-topology shares it), the last ``MAX_CACHED`` kept."""
    key = (src, filename)
    make = _makers.pop(key, None)
    if make is None:
        namespace: dict[str, Any] = {"__builtins__": {}}
        exec(compile(src, filename, "exec"), namespace)
        make = namespace["make"]
        # So a traceback through the chain shows its lines.
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        while len(_makers) >= MAX_CACHED:
            (_, old), _ = _makers.popitem(last=False)
            if not any(f == old for _, f in _makers):
                linecache.cache.pop(old, None)
    _makers[key] = make
    return make  # type: ignore[no-any-return]
