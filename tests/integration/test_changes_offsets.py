"""What the metaverse processor learns from the broker about the changes topic: where a partition's
processing starts (the group's committed offset) and the records of a range faust did not deliver."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from idsync.rig import KafkaBroker
from streams.kafka.lag import group_positions
from streams.kafka.range_reader import RangeReader

pytestmark = pytest.mark.integration


async def topic_with_records(broker: KafkaBroker, topic: str, count: int) -> None:
    """`topic` with two partitions; partition 0 holds records keyed k0..k<count-1> at offsets 0..count-1."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(topic, key=b"k%d" % n, value=b"v%d" % n, partition=0)
    finally:
        await producer.stop()


async def delete_records_before(broker: KafkaBroker, topic: str, offset: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(before_offset=offset)})
    finally:
        await admin.close()


async def test_a_range_reads_exactly_its_records(kafka_broker: KafkaBroker, unique_name: str) -> None:
    await topic_with_records(kafka_broker, unique_name, 10)
    records = await RangeReader(kafka=kafka_broker.bootstrap_servers)(unique_name, 0, 3, 7)
    assert [(r.offset, r.key, r.value, r.partition, r.topic) for r in records] == [
        (n, b"k%d" % n, b"v%d" % n, 0, unique_name) for n in range(3, 7)
    ]


async def test_a_range_that_retention_cut_returns_the_records_left(kafka_broker: KafkaBroker, unique_name: str) -> None:
    await topic_with_records(kafka_broker, unique_name, 10)
    await delete_records_before(kafka_broker, unique_name, 5)
    records = await RangeReader(kafka=kafka_broker.bootstrap_servers)(unique_name, 0, 2, 8)
    assert [r.offset for r in records] == [5, 6, 7]


async def test_a_partition_starts_at_the_committed_offset_or_else_at_its_first_record(
    kafka_broker: KafkaBroker, unique_name: str
) -> None:
    await topic_with_records(kafka_broker, unique_name, 10)
    group = f"{unique_name}-group"
    assert await group_positions(kafka_broker.bootstrap_servers, group, unique_name) == {0: 0, 1: 0}

    consumer = AIOKafkaConsumer(
        unique_name, bootstrap_servers=kafka_broker.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=500)
        await consumer.commit({TopicPartition(unique_name, 0): 7})
    finally:
        await consumer.stop()
    await delete_records_before(kafka_broker, unique_name, 3)
    assert await group_positions(kafka_broker.bootstrap_servers, group, unique_name) == {0: 7, 1: 0}

    # A group that never committed starts where the partition's records now begin.
    assert await group_positions(kafka_broker.bootstrap_servers, f"{group}-new", unique_name) == {0: 3, 1: 0}
