"""A consumer group's offsets as Kafka's `kafka-consumer-groups --describe` shows them, plus the age
of the oldest record the group has not consumed and which member owns each partition.

Read outside the group (an admin client and a consumer without a group id): reading changes
nothing for the group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocol, ConsumerProtocolMemberAssignment

# How long to wait for the record at a group's committed offset (its timestamp is the lag's age).
RECORD_TIMEOUT_SECONDS = 5.0


class GroupReadError(LookupError):
    """The group's offsets cannot be read (a topic does not exist, say)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionOffsets:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed an offset here
    log_start: int
    log_end: int
    # Timestamp (ms) of the oldest record the group has not consumed; None when it has them all.
    oldest_unconsumed_ms: int | None
    owner: str | None  # "client-id@host" of the member the partition is assigned to

    @property
    def resume(self) -> int:
        """Where the group resumes: its committed offset, or the log's start without one."""
        return self.committed if self.committed is not None else self.log_start

    @property
    def lag(self) -> int:
        """Records the group has not consumed (Kafka's LAG when it committed an offset)."""
        return max(self.log_end - self.resume, 0)

    def lag_seconds(self, now: float) -> float:
        """Age of the oldest unconsumed record at `now` (epoch seconds); 0 when caught up."""
        if self.lag == 0 or self.oldest_unconsumed_ms is None:
            return 0.0
        return max(now - self.oldest_unconsumed_ms / 1000, 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupOffsets:
    group: str
    at: float  # epoch seconds the reading was taken
    state: str  # the coordinator's view: Stable, Empty, PreparingRebalance, Dead, ...
    members: int
    partitions: tuple[PartitionOffsets, ...]


class GroupLagReader:
    """Reads consumer groups' offsets through one admin client and one consumer, kept open between
    readings. `client_options` are the aiokafka client keyword arguments (bootstrap servers,
    client id, security)."""

    def __init__(self, client_options: Mapping[str, Any]) -> None:
        self._admin = AIOKafkaAdminClient(**client_options)
        self._consumer = AIOKafkaConsumer(**client_options, enable_auto_commit=False, auto_offset_reset="earliest")

    @property
    def admin(self) -> AIOKafkaAdminClient:
        return self._admin

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """Reads from the earliest offset: a committed record already trimmed by retention means
        the log's first."""
        return self._consumer

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

    async def read(self, group: str, topics: Sequence[str]) -> GroupOffsets:
        partitions = [TopicPartition(topic, p) for topic in topics for p in await self._partitions(topic)]
        at = time.time()
        committed = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
        starts = await self._consumer.beginning_offsets(partitions)
        ends = await self._consumer.end_offsets(partitions)
        state, members, owners = await self._members(group)
        resume = {}
        for tp in partitions:
            offset = committed.get(tp)
            resume[tp] = offset.offset if offset is not None and offset.offset >= 0 else None
        behind = {tp: resume[tp] if resume[tp] is not None else starts[tp]
                  for tp in partitions if ends[tp] > (resume[tp] if resume[tp] is not None else starts[tp])}
        timestamps = await self._timestamps(behind)
        return GroupOffsets(group=group, at=at, state=state, members=members, partitions=tuple(
            PartitionOffsets(topic=tp.topic, partition=tp.partition, committed=resume[tp], log_start=starts[tp],
                             log_end=ends[tp], oldest_unconsumed_ms=timestamps.get(tp), owner=owners.get(tp))
            for tp in partitions
        ))

    async def _partitions(self, topic: str) -> list[int]:
        (description,) = await self._admin.describe_topics([topic])
        if description["error_code"] or not description["partitions"]:
            raise GroupReadError(f"topic {topic!r} does not exist (error {description['error_code']})")
        return sorted(p["partition"] for p in description["partitions"])

    async def _members(self, group: str) -> tuple[str, int, dict[TopicPartition, str]]:
        """The group's state, its member count, and each assigned partition's member."""
        (response,) = await self._admin.describe_consumer_groups([group])
        (error_code, _, state, protocol_type, _, members, *_) = response.groups[0]
        if error_code:
            raise GroupReadError(f"cannot describe group {group!r} (error {error_code})")
        owners: dict[TopicPartition, str] = {}
        if protocol_type == ConsumerProtocol.PROTOCOL_TYPE:
            for _, client_id, host, _, assignment, *_ in members:
                if not assignment:
                    continue
                for tp in ConsumerProtocolMemberAssignment.decode(assignment).partitions():
                    owners[tp] = f"{client_id}@{host.lstrip('/')}"
        return state, len(members), owners

    async def _timestamps(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The timestamp of the first record at or after each offset (what a compacted or
        retention-trimmed log still holds)."""
        if not offsets:
            return {}
        self._consumer.assign(list(offsets))
        for tp, offset in offsets.items():
            self._consumer.seek(tp, offset)
        found: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + RECORD_TIMEOUT_SECONDS
        while len(found) < len(offsets) and time.monotonic() < deadline:
            pending = [tp for tp in offsets if tp not in found]
            batches = await self._consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batches.items():
                if records and tp not in found:
                    found[tp] = records[0].timestamp
            await asyncio.sleep(0)
        self._consumer.assign([])
        return found
