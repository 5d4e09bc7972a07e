"""Issue 16 part 2, broker-free: when the consumer is a static member (group.instance.id), the
state directory layout shared by --workers (and the move from the per-worker one), and the
clean-up of state directories of partitions no longer owned after state_cleanup_delay."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kstreamlet import App, serdes
from kstreamlet.config import WORKER_INDEX_ENV, resolve_settings
from kstreamlet.errors import ConfigError
from kstreamlet.runtime.clients import consumer_config, producer_config
from kstreamlet.state.factory import StoreFactory, store_dir


def topology():
    app = App(application_id="sm")
    app.stream("in", value_serde=serdes.STR).key_by(lambda v: v, name="k").count(name="c").to("o")
    return app.topology()


def cc(**settings):
    s = resolve_settings({"application_id": "sm", **settings}, environ={})
    return consumer_config(s, topology(), {}, s.effective_instance_id, lambda e: None), s


def test_static_membership_is_opt_in_and_uses_the_explicit_instance_id():
    conf, s = cc(instance_id="pod-0", static_membership=True)
    assert conf["group.instance.id"] == "pod-0" and s.effective_static_membership
    conf, s = cc(instance_id="pod-0")  # as in Kafka Streams: no group.instance.id unless asked for
    assert "group.instance.id" not in conf and not s.effective_static_membership
    conf, s = cc()
    assert "group.instance.id" not in conf and not s.effective_static_membership


def test_static_membership_on_both_group_protocols_and_a_stable_transactional_id():
    for protocol in ("consumer", "classic"):
        conf, s = cc(instance_id="pod-1", group_protocol=protocol, static_membership=True)
        assert conf["group.instance.id"] == "pod-1"
        pc = producer_config(s, {}, "pod-1", lambda e: None, None, lambda e, m: None)
        assert pc["transactional.id"] == "sm-pod-1"


def test_static_membership_needs_a_stable_instance_id():
    with pytest.raises(ConfigError, match="static_membership.*needs a stable instance_id"):
        resolve_settings({"application_id": "sm", "static_membership": True}, environ={})


def test_group_instance_id_cannot_be_passed_through():
    with pytest.raises(ConfigError, match="group.instance.id"):
        resolve_settings({"application_id": "sm", "kafka_config": {"group.instance.id": "x"}}, environ={})


# --- state directories ---------------------------------------------------------------------------------


def factory(tmp_path: Path, **settings) -> StoreFactory:
    s = resolve_settings({"application_id": "sm", "state_dir": str(tmp_path), **settings}, environ={})
    return StoreFactory(s, lambda t, n: None, lambda *a: None, None, lambda t: None)


def test_workers_share_one_directory_per_store_partition(tmp_path, monkeypatch):
    monkeypatch.setenv(WORKER_INDEX_ENV, "1")
    f = factory(tmp_path)
    store = f.make("c-value", 3, 6)
    store.close()
    assert (tmp_path / "sm" / "c-value" / "3").is_dir()
    assert not (tmp_path / "sm" / "w1").exists()


def test_a_directory_of_the_per_worker_layout_is_moved_into_place(tmp_path, monkeypatch):
    monkeypatch.setenv(WORKER_INDEX_ENV, "0")
    f = factory(tmp_path)
    legacy = tmp_path / "sm" / "w0" / "c-value" / "2"
    legacy.parent.mkdir(parents=True)
    from kstreamlet.state.rocksdb import RocksDBBackend

    b = RocksDBBackend(legacy)
    b.close()
    store = f.make("c-value", 2, 6)
    try:
        assert not legacy.exists()
        assert store_dir(f.settings, "c-value", 2).is_dir()
    finally:
        store.close()


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    for p in [path, *path.iterdir()]:
        os.utime(p, (t, t))


def test_cleanup_removes_only_idle_unowned_unlocked_directories(tmp_path):
    f = factory(tmp_path, state_cleanup_delay=60)
    owned = f.make("c-value", 0, 4)          # open in this process: never removed
    old = f.make("c-value", 1, 4)
    old.close()                              # revoked long ago
    recent = f.make("c-value", 2, 4)
    recent.close()                           # revoked just now
    _age(store_dir(f.settings, "c-value", 0), 3600)
    _age(store_dir(f.settings, "c-value", 1), 3600)
    removed = f.cleanup()
    assert removed == [store_dir(f.settings, "c-value", 1)]
    assert store_dir(f.settings, "c-value", 0).is_dir() and store_dir(f.settings, "c-value", 2).is_dir()
    owned.close()
    _age(store_dir(f.settings, "c-value", 0), 3600)
    assert f.cleanup() == [store_dir(f.settings, "c-value", 0)]


def test_cleanup_keeps_a_directory_another_process_has_locked(tmp_path):
    """Another worker of the pod owns the partition (its RocksDB holds the LOCK): kept however old."""
    f = factory(tmp_path, state_cleanup_delay=0)
    s = f.make("c-value", 5, 6)
    s.close()
    path = store_dir(f.settings, "c-value", 5)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(path / 'LOCK')!r}, os.O_RDWR)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        _age(path, 3600)
        assert f.cleanup() == []
        assert path.is_dir()
    finally:
        holder.kill()
        holder.wait(10)
    assert f.cleanup() == [path]


def test_cleanup_never_touches_the_memory_backend_or_a_missing_dir(tmp_path):
    assert factory(tmp_path, state_backend="memory").cleanup() == []
    assert factory(tmp_path / "none").cleanup() == []


def test_maybe_cleanup_is_rate_limited(tmp_path):
    f = factory(tmp_path, state_cleanup_delay=0)
    s = f.make("c-value", 0, 1)
    s.close()
    assert f.maybe_cleanup() == []  # not due yet
    f._next_cleanup = 0
    assert f.maybe_cleanup() == [store_dir(f.settings, "c-value", 0)]
