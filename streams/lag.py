"""Consumer lag: how many records of a topic a consumer group has not committed yet."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def consumer_lag(bootstrap_servers: str, group_id: str, topic: str) -> dict[int, int]:
    """Lag per partition of `topic` for `group_id` (end offset minus committed offset).

    A partition the group never committed counts from the start of the partition.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await _partitions(admin, topic)]
        committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
        start = await consumer.beginning_offsets(partitions)
        end = await consumer.end_offsets(partitions)
        lag = {}
        for tp in partitions:
            offset = committed.get(tp)
            position = offset.offset if offset is not None and offset.offset >= 0 else start[tp]
            lag[tp.partition] = end[tp] - position
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[int]:
    (description,) = await admin.describe_topics([topic])
    if description["error_code"] or not description["partitions"]:
        raise LookupError(f"topic {topic!r} does not exist (error {description['error_code']})")
    return sorted(p["partition"] for p in description["partitions"])
