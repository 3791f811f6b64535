"""Drives one change reader: publish its changes, then advance its stored position.

A reader with no stored position (first start, or after its mode changed) starts with a
snapshot, published as a full import so that the metaverse can sweep what no longer exists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.config.forests import DEFAULT_OBJECT_KINDS
from streams.config.topology import Topics
from streams.contracts import ChangeReader, PermanentError, RetriableError
from streams.events import ObjectKind, ReaderPosition
from streams.kafka.positions import PositionStore
from streams.kafka.publisher import ChangePublisher
from streams.monitoring.metrics import POSITION_SAVED, READER_OUTAGES, READER_SECONDS_SINCE_READ, READER_UP
from streams.monitoring.outages import Outage

log = logging.getLogger(__name__)

# Batches sent and not yet acknowledged before the runner waits for the oldest.
_MAX_IN_FLIGHT = 4
# How long a failed reader waits for Kafka's acknowledgements of the batches it had sent.
_SETTLE_AFTER_FAILURE_SECONDS = 2.0
# How often a reader retries an error that needs a person (PermanentError).
_PERMANENT_RETRY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class _InFlight:
    acks: asyncio.Future
    position: str | None


def _ignore_outcome(acks: asyncio.Future) -> None:
    """For batches given up after a failure: they are sent again, so how they ended does not
    matter (retrieving the error keeps asyncio from reporting it as never retrieved)."""
    if not acks.cancelled():
        acks.exception()


def _done() -> asyncio.Future:
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


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
        # The newest position whose changes Kafka acknowledged, saved in the position store.
        self._acknowledged: str | None = None
        self._caught_up = False
        READER_SECONDS_SINCE_READ.labels(forest).set_function(lambda: time.monotonic() - self._last_read)

    @property
    def reader_id(self) -> str:
        return f"forest/{self._reader.forest}"

    async def run(self) -> None:
        acknowledged = await self._resume_position()
        while True:
            in_flight: deque[_InFlight] = deque()
            try:
                await self._follow(acknowledged, in_flight)
            except (RetriableError, PermanentError, KafkaError) as exc:
                # Read again from the newest position whose changes Kafka acknowledged: the
                # reader re-sends what came after it, downstream drops what it already has.
                # Batches Kafka is acknowledging as the read failed count too (a directory that
                # went away says nothing about them): fewer changes are published twice.
                await self._retire_acknowledged(in_flight)
                acknowledged = self._acknowledged
                for batch in in_flight:
                    batch.acks.add_done_callback(_ignore_outcome)
                delay = self._outage.failed(exc)
                if isinstance(exc, PermanentError):
                    # Bad credentials, a missing right or base DN: only a person can mend it. The
                    # other forests go on meanwhile; this one says so at every attempt.
                    delay = max(delay, _PERMANENT_RETRY_SECONDS)
                    log.error("reader needs attention forest=%s error=%r retry_in=%.0fs", self._reader.forest, str(exc), delay)
                await asyncio.sleep(delay)

    async def _retire_acknowledged(self, in_flight: deque[_InFlight]) -> None:
        """After a failure: wait briefly for the batches in flight, and keep the position of
        those at the head that Kafka acknowledged."""
        newest = self._acknowledged
        deadline = asyncio.get_running_loop().time() + _SETTLE_AFTER_FAILURE_SECONDS
        while in_flight:
            acks = in_flight[0].acks
            remaining = deadline - asyncio.get_running_loop().time()
            if not acks.done() and remaining > 0:
                await asyncio.wait([acks], timeout=remaining)
            if not acks.done() or acks.cancelled() or acks.exception() is not None:
                break
            newest = in_flight.popleft().position or newest
        if newest is not None and newest != self._acknowledged:
            try:
                await self._save(newest)
            except KafkaError as exc:
                log.warning("reader position not saved after a failure forest=%s error=%r", self._reader.forest, str(exc))

    async def _follow(self, position: str | None, in_flight: deque[_InFlight]) -> None:
        """Read and publish from `position` on. The next batch is read while Kafka acknowledges
        the last ones (at most _MAX_IN_FLIGHT batches); a position is saved only once every
        change up to it is acknowledged. Snapshots are published alone."""
        self._acknowledged = position
        while True:
            batch = await self._reader.read(position)
            if batch.is_snapshot:
                await self._settle(in_flight, keep=0)
                await self._publisher.publish_snapshot(batch)
                in_flight.append(_InFlight(acks=_done(), position=batch.position))
            else:
                in_flight.append(_InFlight(acks=await self._publisher.send(batch), position=batch.position))
            self._outage.succeeded()
            self._last_read = time.monotonic()
            if batch.position is not None:
                position = batch.position
            if not self._caught_up:
                # The forest as of this start is in the stream (the metaverse waits for the
                # central forest's before it exports a contact): say so once it is durable.
                await self._settle(in_flight, keep=0)
                await self._publisher.publish_caught_up()
                self._caught_up = True
            await self._settle(in_flight, keep=_MAX_IN_FLIGHT - 1)

    async def _settle(self, in_flight: deque[_InFlight], *, keep: int) -> None:
        """Retire the batches at the head of `in_flight` that Kafka acknowledged, waiting for
        the oldest until at most `keep` remain, and save the newest position retired (also when
        a later batch failed)."""
        newest = self._acknowledged
        try:
            while in_flight and (len(in_flight) > keep or in_flight[0].acks.done()):
                await in_flight[0].acks  # raises if Kafka refused any record of the batch
                newest = in_flight.popleft().position or newest
        finally:
            if newest is not None and newest != self._acknowledged:
                await self._save(newest)

    async def _save(self, position: str) -> None:
        await self._positions.save(ReaderPosition(reader=self.reader_id, mode=self._reader.mode, position=position))
        POSITION_SAVED.labels(self._reader.forest).set_to_current_time()
        self._acknowledged = position

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
