"""A compacted topic read whole: each key's latest value, outside any consumer group."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka.clients import Brokers, client_settings


async def latest_values(kafka: Brokers, topic: str, *, until_ms: int | None = None) -> dict[bytes | None, bytes]:
    """Each key's latest value, read from the start of every partition to the end offsets it has
    now; a key whose latest record is a tombstone is left out. A topic that does not exist yet
    reads as empty (and is not created by reading it). `until_ms`: as of that time (records with a
    later timestamp are left out); compaction may already have removed a key's older values."""
    partitions = [TopicPartition(topic, p) for p in await _partitions(kafka, topic)]
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(**client_settings(kafka), enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        values: dict[bytes | None, bytes] = {}
        remaining = set(partitions)
        while remaining:
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if not remaining:
                break
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
                for record in records:
                    if record.offset >= ends[tp] or (until_ms is not None and record.timestamp > until_ms):
                        continue
                    if record.value is None:
                        values.pop(record.key, None)
                    else:
                        values[record.key] = record.value
        return values
    finally:
        await consumer.stop()


async def _partitions(kafka: Brokers, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**client_settings(kafka))
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return []
        (description,) = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in description["partitions"])
    finally:
        await admin.close()
