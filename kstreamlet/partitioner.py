"""Key -> partition, as the app's producers choose it.

The member's producers use librdkafka's ``murmur2_random`` partitioner (runtime/clients.py):
a keyed record goes to ``murmur2(serialized key) % partitions``, exactly as Kafka's Java
clients' default partitioner. A ``key_by`` writes its repartition topic that way, so the task
(partition) holding a key's state is this function of the key bytes serialized with the
store's key serde. Interactive queries (kstreamlet/query/) route a key with it, and the
TopologyTestDriver (kstreamlet/testing/driver.py) partitions piped records with it.
"""

from __future__ import annotations


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (seed 0x9747b28c) of ``data``, as an unsigned 32-bit int."""
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length % 4
    tail = length - rest
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of a record keyed ``key`` (serialized) in a topic of ``partitions`` partitions."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
