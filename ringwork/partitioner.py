"""Key -> partition, bit-for-bit the same as Kafka's default partitioner for keyed records.

Using Kafka's murmur2 (seed 0x9747b28c, the Java client's variant) means a job keyed ``"user-42"``
lands on the same partition number as a Kafka record keyed ``"user-42"`` in a topic with the same
partition count, so users can co-partition ringwork work with their Kafka topics. It is also
stable across processes, machines and Python versions, which ``hash()`` is not.

Hashing is pure Python (~1 µs a key), and bulk enqueues repeat keys, so :func:`partition_for`
keeps a bounded LRU cache of recent ``(key, partitions)`` answers.
"""

from __future__ import annotations

import functools
import struct

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK32 = 0xFFFFFFFF

#: Distinct (key, partition count) pairs remembered by :func:`partition_for`.
CACHE_SIZE = 1 << 16


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: returns the signed 32-bit hash the Java client computes."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    tail = length & ~3
    if tail:
        for k in struct.unpack(f"<{tail >> 2}I", data[:tail]):
            k = (k * _M) & _MASK32
            k ^= k >> 24
            h = ((h * _M) & _MASK32) ^ ((k * _M) & _MASK32)
    rest = length & 3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(value: int) -> int:
    """Kafka's ``Utils.toPositive``: clears the sign bit rather than taking ``abs``."""
    return value & 0x7FFFFFFF


@functools.lru_cache(maxsize=CACHE_SIZE)
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a record with this string key."""
    if partitions <= 0:
        raise ValueError("partitions must be positive")
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions
