"""Publishing what a reader read: changes to the changes topic, bad records to the error topic,
and snapshots bracketed by markers that every partition's processor sees."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timezone

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from streams.config.forests import DEFAULT_OBJECT_KINDS
from streams.config.topology import Topics
from streams.contracts import ReadBatch, RejectedRecord
from streams.events import MAX_EVENT_BYTES, DirectoryChange, ObjectKind, ReaderCaughtUp, SnapshotMarker, SnapshotPhase
from streams.kafka.dead_letters import MAX_DEAD_LETTER_BYTES, DeadLetter
from streams.monitoring.metrics import CHANGES_PUBLISHED, STAGE_RECORDS
from streams.rules.secrets import scrub_record, without_secrets

log = logging.getLogger(__name__)

_partitioner = DefaultPartitioner()


def _partition_of(key: bytes, partitions: list[int]) -> int:
    """The partition the producer itself would choose for `key` (murmur2, as Kafka's Java
    clients and faust do)."""
    return _partition_cached(key, tuple(partitions))


# murmur2 is pure Python here, and the same objects change again and again.
@functools.lru_cache(maxsize=65_536)
def _partition_cached(key: bytes, partitions: tuple[int, ...]) -> int:
    return _partitioner(key, partitions, partitions)


class ChangePublisher:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        topics: Topics,
        forest: str,
        kinds: frozenset[ObjectKind] = DEFAULT_OBJECT_KINDS,
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._forest = forest
        self._kinds = kinds

    async def publish(self, batch: ReadBatch) -> None:
        """Send the batch and wait until Kafka acknowledged every record of it."""
        await (await self.send(batch))

    async def send(self, batch: ReadBatch) -> asyncio.Future:
        """Queue the batch for Kafka, in order; returns what completes once Kafka acknowledged
        every record of it (and fails if any record failed).

        Changes go out as one record batch per partition rather than one send per change: the
        producer's per-record path cost more than decoding the change (bench/reader_to_kafka.py).
        The partition is the one the producer's default partitioner gives the key, so each
        object's changes stay on one partition, in order, as the metaverse table expects."""
        rejected = list(batch.rejected)
        topic = self._topics.changes
        partitions = sorted(await self._producer.partitions_for(topic))
        per_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for change in self._wanted(batch.changes):
            value = change.to_bytes()
            if len(value) > MAX_EVENT_BYTES:
                reason = f"{change.op} of {change.dn!r} is {len(value)} bytes, over the {MAX_EVENT_BYTES} limit"
                rejected.append(RejectedRecord(reason=reason, raw=value, position=change.position))
                continue
            key = change.key.encode()
            per_partition.setdefault(_partition_of(key, partitions), []).append((key, value))
        deliveries = []
        for partition, records in per_partition.items():
            deliveries += await self._send_records(topic, partition, records)
        published = sum(len(records) for records in per_partition.values())
        for record in rejected:
            deliveries.append(await self._dead_letter(record))
        forest = self._forest

        def published_all(acknowledged: asyncio.Future) -> None:
            if not acknowledged.cancelled() and acknowledged.exception() is None:
                CHANGES_PUBLISHED.labels(forest).inc(published)
                STAGE_RECORDS.labels("reader").inc(published)
                log.debug("published forest=%s changes=%d rejected=%d", forest, published, len(rejected))

        acknowledged = asyncio.gather(*deliveries)
        acknowledged.add_done_callback(published_all)
        return acknowledged

    async def _send_records(self, topic: str, partition: int, records: list[tuple[bytes, bytes]]) -> list[asyncio.Future]:
        """One or more record batches (the producer's max_batch_size bounds each; a record larger
        than that travels alone)."""
        deliveries = []
        builder = self._producer.create_batch()
        for key, value in records:
            if builder.append(key=key, value=value, timestamp=None) is None:
                deliveries.append(await self._producer.send_batch(builder, topic, partition=partition))
                builder = self._producer.create_batch()
                builder.append(key=key, value=value, timestamp=None)
        deliveries.append(await self._producer.send_batch(builder, topic, partition=partition))
        return deliveries

    async def publish_snapshot(self, batch: ReadBatch, *, allow_mass_delete: bool = False) -> str:
        """Publish a snapshot between BEGIN and END markers; returns the snapshot's id."""
        snapshot_id = uuid.uuid4().hex
        changes = tuple(replace(change, snapshot_id=snapshot_id) for change in self._wanted(batch.changes))
        begin = SnapshotMarker(forest=self._forest, snapshot_id=snapshot_id, phase=SnapshotPhase.BEGIN)
        end = replace(
            begin,
            phase=SnapshotPhase.END,
            # From every object read, published or not: the base entry alone (an OU, left out by
            # object_kinds) still dates a snapshot whose forest has no user left.
            high_water=max((change.position for change in batch.changes), default=None),
            objects=len(changes),
            allow_mass_delete=allow_mass_delete,
        )
        await self._broadcast(begin)
        await self.publish(replace(batch, changes=changes))
        await self._broadcast(end)
        log.info("snapshot published forest=%s snapshot=%s objects=%d", self._forest, snapshot_id, len(changes))
        return snapshot_id

    def _wanted(self, changes: Iterable[DirectoryChange]) -> list[DirectoryChange]:
        """The changes of the kinds the forest publishes, without secrets; a change of unknown
        kind is kept, since the metaverse may know the object's kind from earlier events."""
        return [without_secrets(change) for change in changes if change.kind is None or change.kind in self._kinds]

    async def publish_caught_up(self) -> None:
        """Tell every partition that the forest's state as of the reader's start is published."""
        await self._broadcast(ReaderCaughtUp(forest=self._forest, sent_at=datetime.now(timezone.utc).isoformat()))

    async def _broadcast(self, marker: SnapshotMarker | ReaderCaughtUp) -> None:
        """Every partition gets the marker: each one sweeps (or counts in) the objects it holds."""
        key = f"{self._forest}/snapshot".encode()
        value = marker.to_bytes()
        partitions = sorted(await self._producer.partitions_for(self._topics.changes))
        deliveries = [
            await self._producer.send(self._topics.changes, key=key, value=value, partition=partition)
            for partition in partitions
        ]
        await asyncio.gather(*deliveries)

    async def _dead_letter(self, record: RejectedRecord) -> asyncio.Future:
        letter = DeadLetter(
            stage="reader",
            reason=record.reason,
            key=None,
            # Readers keep the record as they read it: its secrets go before it goes anywhere.
            value=scrub_record(record.raw)[:MAX_DEAD_LETTER_BYTES],
            forest=self._forest,
            source_position=record.position,
        )
        letter.log()
        return await self._producer.send(self._topics.errors, value=letter.value, headers=letter.headers())
