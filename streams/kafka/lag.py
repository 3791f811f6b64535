"""Consumer lag: how many records of a topic a consumer group has not committed yet."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, Sequence

from aiokafka import TopicPartition

from streams.kafka.clients import Brokers, client_settings
from streams.kafka.group_lag import GroupLagReader, GroupOffsets


class LagProbe:
    """Reads consumer lag through one admin client and one consumer, kept open between reads
    (a metrics scrape every few seconds should not open two Kafka connections each time)."""

    def __init__(self, kafka: Brokers) -> None:
        # One admin client and one consumer, the group reader's: it reads the groups' offsets and
        # the age of their oldest unconsumed records, and this probe's lag with the same clients.
        self._groups = GroupLagReader(client_settings(kafka))
        self._admin, self._consumer = self._groups.admin, self._groups.consumer

    async def start(self) -> None:
        await self._groups.start()

    async def stop(self) -> None:
        await self._groups.stop()

    async def group_offsets(self, group_id: str, topics: Sequence[str]) -> GroupOffsets:
        """The group's offsets and age of its oldest unconsumed record, as `idsync lag` reads them."""
        return await self._groups.read(group_id, topics)

    async def lag(self, group_id: str, topic: str) -> dict[int, int]:
        """Lag per partition of `topic` for `group_id` (end offset minus the position, see `positions`)."""
        positions = await self.positions(group_id, topic)
        end = await self._consumer.end_offsets([TopicPartition(topic, p) for p in positions])
        return {p: end[TopicPartition(topic, p)] - position for p, position in positions.items()}

    async def positions(self, group_id: str, topic: str) -> dict[int, int]:
        """Per partition of `topic`, where `group_id` resumes: its committed offset, or the start of
        the partition if the group never committed one."""
        partitions = [TopicPartition(topic, p) for p in await self._partitions(topic)]
        committed = await self._admin.list_consumer_group_offsets(group_id, partitions=partitions)
        start = await self._consumer.beginning_offsets(partitions)
        positions = {}
        for tp in partitions:
            offset = committed.get(tp)
            positions[tp.partition] = offset.offset if offset is not None and offset.offset >= 0 else start[tp]
        return positions

    async def _partitions(self, topic: str) -> list[int]:
        (description,) = await self._admin.describe_topics([topic])
        if description["error_code"] or not description["partitions"]:
            raise LookupError(f"topic {topic!r} does not exist (error {description['error_code']})")
        return sorted(p["partition"] for p in description["partitions"])


@asynccontextmanager
async def lag_probe(kafka: Brokers) -> AsyncIterator[LagProbe]:
    probe = LagProbe(kafka)
    await probe.start()
    try:
        yield probe
    finally:
        await probe.stop()


async def consumer_lag(kafka: Brokers, group_id: str, topic: str) -> dict[int, int]:
    """One lag reading through a probe of its own (see LagProbe.lag)."""
    async with lag_probe(kafka) as probe:
        return await probe.lag(group_id, topic)


async def group_positions(kafka: Brokers, group_id: str, topic: str) -> dict[int, int]:
    """One reading of where the group resumes, through a probe of its own (see LagProbe.positions)."""
    async with lag_probe(kafka) as probe:
        return await probe.positions(group_id, topic)
