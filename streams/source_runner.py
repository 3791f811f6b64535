"""Drives one change reader: publish its changes, then advance its stored position."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.backoff import Backoff
from streams.contracts import ChangeReader, ReadBatch, RejectedRecord, RetriableError
from streams.dead_letters import MAX_DEAD_LETTER_BYTES, DeadLetter
from streams.events import MAX_EVENT_BYTES, ReaderPosition
from streams.positions import PositionStore
from streams.topology import Topics

log = logging.getLogger(__name__)


class SourceRunner:
    def __init__(
        self,
        reader: ChangeReader,
        *,
        producer: AIOKafkaProducer,
        positions: PositionStore,
        topics: Topics,
    ) -> None:
        self._reader = reader
        self._producer = producer
        self._positions = positions
        self._topics = topics

    @property
    def reader_id(self) -> str:
        return f"forest/{self._reader.forest}"

    async def run(self) -> None:
        position = await self._resume_position()
        backoff = Backoff()
        while True:
            try:
                batch = await self._reader.read(position)
                await self._publish(batch)
            except (RetriableError, KafkaError) as exc:
                delay = backoff.next_delay()
                log.warning(
                    "reader waiting forest=%s error=%s retry_in=%.1fs",
                    self._reader.forest,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            if batch.position is not None and batch.position != position:
                await self._positions.save(
                    ReaderPosition(
                        reader=self.reader_id, mode=self._reader.mode, position=batch.position
                    )
                )
                position = batch.position

    async def _resume_position(self) -> str | None:
        stored = await self._positions.load(self.reader_id)
        if stored is None:
            log.info("reader starts with a snapshot forest=%s", self._reader.forest)
            return None
        if stored.mode != self._reader.mode:
            log.warning(
                "reader mode changed, starting with a snapshot forest=%s stored_mode=%s mode=%s",
                self._reader.forest,
                stored.mode,
                self._reader.mode,
            )
            return None
        log.info("reader resumes forest=%s position=%s", self._reader.forest, stored.position)
        return stored.position

    async def _publish(self, batch: ReadBatch) -> None:
        """Send the batch and wait until Kafka acknowledged every record of it."""
        deliveries = []
        rejected = list(batch.rejected)
        for change in batch.changes:
            value = change.to_bytes()
            if len(value) > MAX_EVENT_BYTES:
                rejected.append(
                    RejectedRecord(
                        reason=f"{change.op} of {change.dn!r} is {len(value)} bytes, over the {MAX_EVENT_BYTES} limit",
                        raw=value[:MAX_DEAD_LETTER_BYTES],
                        position=change.position,
                    )
                )
                continue
            deliveries.append(await self._producer.send(self._topics.changes, key=change.key.encode(), value=value))
        for record in rejected:
            letter = DeadLetter(
                stage="reader",
                reason=record.reason,
                key=None,
                value=record.raw[:MAX_DEAD_LETTER_BYTES],
                forest=self._reader.forest,
                source_position=record.position,
            )
            letter.log()
            deliveries.append(
                await self._producer.send(self._topics.errors, value=letter.value, headers=letter.headers())
            )
        if deliveries:
            await asyncio.gather(*deliveries)
            log.debug("published forest=%s changes=%d", self._reader.forest, len(batch.changes))
