import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringwork.partitioner import murmur2, partition_for

# Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2.
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), sorted(KAFKA_VECTORS.items()))
def test_murmur2_matches_kafka(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_partition_uses_kafka_to_positive_not_abs() -> None:
    # -790332482 & 0x7fffffff = 1357151166; abs() would give 790332482 and a different partition.
    assert partition_for("foobar", 50) == 1357151166 % 50
    assert partition_for("foobar", 50) != 790332482 % 50


def test_partition_for_utf8_keys() -> None:
    assert partition_for("ключ", 64) == (murmur2("ключ".encode()) & 0x7FFFFFFF) % 64


@given(st.text(), st.integers(min_value=1, max_value=10_000))
def test_partition_in_range_and_stable(key: str, partitions: int) -> None:
    p = partition_for(key, partitions)
    assert 0 <= p < partitions
    assert p == partition_for(key, partitions)


def test_rejects_non_positive_partition_count() -> None:
    with pytest.raises(ValueError):
        partition_for("k", 0)
