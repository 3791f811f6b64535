"""The metaverse processor: hands every record of the engine's topics to the engine exactly in
offset order per topic and partition, and says how far it got.

Kept apart from faust's wiring (streams/processors/app.py) and from the engine's rules
(streams/processors/engine.py): it sees Kafka only through the callables it is given.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, Iterable

from streams.kafka.range_reader import Record

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
# What the engine does with a record: None, or (reason, forest) for the error topic.
Handle = Callable[[Record], Awaitable[tuple[str, str | None] | None]]
DeadLetterFn = Callable[[Record, str, str | None], Awaitable[None]]
ReadRange = Callable[[str, int, int, int], Awaitable[list[Record]]]
StartOffset = Callable[[str, int], Awaitable[int]]


class MetaverseProcessor:
    def __init__(self, *, handle: Handle, dead_letter: DeadLetterFn, start_offset: StartOffset, read_range: ReadRange) -> None:
        """`start_offset(topic, partition)` is where processing of a newly assigned partition
        begins: the group's committed offset (every record before it was processed and is durable)."""
        self._handle = handle
        self._dead_letter = dead_letter
        self._start_offset = start_offset
        self._read_range = read_range
        # Per topic and partition: every record before this offset has been processed by this worker.
        self._next_offset: dict[TopicPartition, int] = {}

    async def process(self, record: Record) -> None:
        """Process a record, first re-reading any records of its partition that never arrived.

        Offsets of idsync's topics are contiguous (no transactions, no compaction), so a jump
        past the next expected offset means records were skipped on the way: faust 0.15 can
        skip records produced while a worker recovers (faust issue #596). A record before it
        was processed already and is dropped.
        """
        tp = (record.topic, record.partition)
        expected = self._next_offset.get(tp)
        if expected is None:
            expected = await self._start_offset(*tp)
        if record.offset < expected:
            log.debug("record processed already topic=%s partition=%d offset=%d", *tp, record.offset)
            return
        if record.offset > expected:
            missing = await self._read_range(record.topic, record.partition, expected, record.offset)
            log.warning(
                "skipped records re-read topic=%s partition=%d from=%d to=%d count=%d",
                *tp, expected, record.offset, len(missing),
            )
            for skipped in missing:
                await self._process_one(skipped)
        await self._process_one(record)
        self._next_offset[tp] = record.offset + 1

    def processed(self) -> dict[TopicPartition, int]:
        """Per topic and partition, the offset before which every record has been processed (what
        may be committed once the producer has flushed what processing sent)."""
        return dict(self._next_offset)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions revoked: where their processing resumes is the committed offset again."""
        for tp in partitions:
            self._next_offset.pop(tp, None)

    async def _process_one(self, record: Record) -> None:
        rejected = await self._handle(record)
        if rejected is not None:
            reason, forest = rejected
            await self._dead_letter(record, reason, forest)
