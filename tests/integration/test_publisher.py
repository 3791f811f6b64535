"""The change publisher against a real broker: record batches per partition must land where the
producer's own keyed sends land, keep each object's changes in order, and carry oversized ones."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer

from idsync.rig import KafkaBroker
from idsync.kafka_clients import producer_for
from streams.config.topology import KafkaSettings, Topics
from streams.contracts import ReadBatch
from streams.events import ChangeOp, DirectoryChange, decode_change_topic
from streams.kafka.publisher import ChangePublisher
from streams.kafka.topics import ensure_topics

pytestmark = pytest.mark.integration


def settings(broker: KafkaBroker, prefix: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, client_id=prefix, partitions=3, replication_factor=1,
        topics=Topics(**{name: f"{prefix}.{name}" for name in ("changes", "positions", "contacts", "errors")}),
    )


def change(object_id: str, n: int, description: str = "") -> DirectoryChange:
    return DirectoryChange(
        forest="forest-p", object_id=object_id, op=ChangeOp.MODIFY, dn=f"uid={object_id},dc=p",
        attributes={"description": (description or f"v{n}",)}, position=f"{n:012d}", changed_at="2026-11-22T00:00:00Z",
    )


async def records_of(broker: KafkaBroker, topic: str, expected: int) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records = []
        while len(records) < expected and (batch := await consumer.getmany(timeout_ms=5000)):
            records += [record for partition in batch.values() for record in partition]
        return records
    finally:
        await consumer.stop()


async def test_batches_land_where_keyed_sends_land_in_order(kafka_broker: KafkaBroker, unique_name: str) -> None:
    kafka = settings(kafka_broker, unique_name)
    await ensure_topics(kafka)
    producer = producer_for(kafka)
    await producer.start()
    try:
        ids = [f"object-{i}" for i in range(60)]
        # 3 batches, each with 4 changes of every object, one of them far over the producer's
        # 16 KiB record-batch size.
        n = 0
        for _ in range(3):
            changes = []
            for _ in range(4):
                for object_id in ids:
                    n += 1
                    changes.append(change(object_id, n))
            changes.append(change("object-big", n + 1, description="x" * 100_000))
            await ChangePublisher(producer, topics=kafka.topics, forest="forest-p").publish(
                ReadBatch(changes=tuple(changes), rejected=(), position=str(n))
            )
        # The same keys through the producer's own keyed send, to another topic of 3 partitions.
        reference = kafka.topics.contacts
        for object_id in [*ids, "object-big"]:
            await producer.send_and_wait(reference, key=change(object_id, 0).key.encode(), value=b"x")
    finally:
        await producer.stop()

    published = await records_of(kafka_broker, kafka.topics.changes, 3 * (4 * 60 + 1))
    keyed = {record.key: record.partition for record in await records_of(kafka_broker, reference, 61)}
    assert len(published) == 3 * (4 * 60 + 1)
    assert {record.key: record.partition for record in published} == keyed
    assert len(set(keyed.values())) == 3  # the keys spread over every partition
    positions: dict[bytes, list[str]] = {}
    for record in published:
        positions.setdefault(record.key, []).append(decode_change_topic(record.value).position)
    assert all(p == sorted(p) for p in positions.values()), "an object's changes arrived out of order"
    big = [decode_change_topic(r.value) for r in published if r.key == change("object-big", 0).key.encode()]
    assert [len(c.attributes["description"][0]) for c in big] == [100_000] * 3
