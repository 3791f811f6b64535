"""Consumer lag: how many records of a topic a consumer group has not committed yet."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


class LagProbe:
    """Reads consumer lag through one admin client and one consumer, kept open between reads
    (a metrics scrape every few seconds should not open two Kafka connections each time)."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)

    async def start(self) -> None:
        await self._admin.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._admin.close()
            raise

    async def stop(self) -> None:
        try:
            await self._consumer.stop()
        finally:
            await self._admin.close()

    async def lag(self, group_id: str, topic: str) -> dict[int, int]:
        """Lag per partition of `topic` for `group_id` (end offset minus committed offset).

        A partition the group never committed counts from the start of the partition.
        """
        partitions = [TopicPartition(topic, p) for p in await self._partitions(topic)]
        committed = await self._admin.list_consumer_group_offsets(group_id, partitions=partitions)
        start = await self._consumer.beginning_offsets(partitions)
        end = await self._consumer.end_offsets(partitions)
        lag = {}
        for tp in partitions:
            offset = committed.get(tp)
            position = offset.offset if offset is not None and offset.offset >= 0 else start[tp]
            lag[tp.partition] = end[tp] - position
        return lag

    async def _partitions(self, topic: str) -> list[int]:
        (description,) = await self._admin.describe_topics([topic])
        if description["error_code"] or not description["partitions"]:
            raise LookupError(f"topic {topic!r} does not exist (error {description['error_code']})")
        return sorted(p["partition"] for p in description["partitions"])


async def consumer_lag(bootstrap_servers: str, group_id: str, topic: str) -> dict[int, int]:
    """One lag reading through a probe of its own (see LagProbe.lag)."""
    probe = LagProbe(bootstrap_servers)
    await probe.start()
    try:
        return await probe.lag(group_id, topic)
    finally:
        await probe.stop()
