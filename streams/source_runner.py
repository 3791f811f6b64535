"""Drives one change reader: publish its changes, then advance its stored position.

A reader with no stored position (first start, or after its mode changed) starts with a
snapshot, published as a full import so that the metaverse can sweep what no longer exists.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.contracts import ChangeReader, RetriableError
from streams.events import ObjectKind, ReaderPosition
from streams.metrics import POSITION_SAVED, READER_OUTAGES, READER_SECONDS_SINCE_READ, READER_UP
from streams.outages import Outage
from streams.positions import PositionStore
from streams.publisher import ChangePublisher
from streams.topology import DEFAULT_OBJECT_KINDS, Topics

log = logging.getLogger(__name__)


class SourceRunner:
    def __init__(
        self,
        reader: ChangeReader,
        *,
        producer: AIOKafkaProducer,
        positions: PositionStore,
        topics: Topics,
        kinds: frozenset[ObjectKind] = DEFAULT_OBJECT_KINDS,
    ) -> None:
        self._reader = reader
        self._positions = positions
        self._publisher = ChangePublisher(producer, topics=topics, forest=reader.forest, kinds=kinds)
        forest = reader.forest
        self._outage = Outage(
            f"component=reader forest={forest}", up=READER_UP.labels(forest), outages=READER_OUTAGES.labels(forest)
        )
        self._last_read = time.monotonic()
        READER_SECONDS_SINCE_READ.labels(forest).set_function(lambda: time.monotonic() - self._last_read)

    @property
    def reader_id(self) -> str:
        return f"forest/{self._reader.forest}"

    async def run(self) -> None:
        position = await self._resume_position()
        while True:
            try:
                batch = await self._reader.read(position)
                if batch.is_snapshot:
                    await self._publisher.publish_snapshot(batch)
                else:
                    await self._publisher.publish(batch)
            except (RetriableError, KafkaError) as exc:
                await asyncio.sleep(self._outage.failed(exc))
                continue
            self._outage.succeeded()
            self._last_read = time.monotonic()
            if batch.position is not None and batch.position != position:
                await self._positions.save(
                    ReaderPosition(
                        reader=self.reader_id, mode=self._reader.mode, position=batch.position
                    )
                )
                POSITION_SAVED.labels(self._reader.forest).set_to_current_time()
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
