"""The two state backends answer range reads the same way: ``iter_from(start, end)`` is
``start <= key < end`` in key order, deleted keys and the offset key left out. The RocksDB
backend gives ``end`` to RocksDB as the iterator's upper bound (so a range whose entries were
all deleted does not walk the tombstones after it); the Store's merged view relies on it."""

from __future__ import annotations

import pytest

from kstreamlet.state.backend import OFFSET_KEY, MemoryBackend
from kstreamlet.state.rocksdb import RocksDBBackend


@pytest.fixture(params=["memory", "rocksdb"])
def backend(request, tmp_path):  # type: ignore[no-untyped-def]
    b = MemoryBackend() if request.param == "memory" else RocksDBBackend(tmp_path / "db")
    yield b
    b.close()


def test_iter_from_is_a_half_open_range_without_deleted_keys_or_the_offset(backend):
    backend.write({b"a%02d" % i: b"v%d" % i for i in range(20)}, offset=7)
    backend.write({b"a%02d" % i: None for i in range(5, 15)}, offset=8)  # tombstones inside the range
    assert [k for k, _ in backend.iter_from(b"a03", b"a17")] == [b"a03", b"a04", b"a15", b"a16"]
    assert list(backend.iter_from(b"a05", b"a15")) == [], "a range with only deleted keys is empty"
    assert [k for k, _ in backend.iter_from(b"a18")] == [b"a18", b"a19"]
    assert all(k != OFFSET_KEY for k, _ in backend.iter_from(b""))
    assert backend.changelog_offset() == 8
