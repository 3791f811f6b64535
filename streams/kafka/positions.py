"""Reader positions, kept in a compacted Kafka topic keyed by reader.

A reader's position is saved only after Kafka acknowledged every event before it, so a
restart (even after kill -9) resumes at or before the first unpublished change.
"""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.events import EventDecodeError, ReaderPosition
from streams.kafka.clients import Brokers, client_settings


class PositionStore:
    def __init__(self, producer: AIOKafkaProducer, *, kafka: Brokers, topic: str) -> None:
        self._producer = producer
        self._kafka = kafka
        self._topic = topic

    async def load(self, reader: str) -> ReaderPosition | None:
        """The last position saved for `reader`, read from the start of the topic to its end."""
        wanted = reader.encode()
        latest = (await latest_positions(self._kafka, self._topic, lambda key: key == wanted)).get(wanted)
        return _decode(latest, reader) if latest is not None else None

    async def save(self, position: ReaderPosition) -> None:
        await self._producer.send_and_wait(
            self._topic, key=position.reader.encode(), value=position.to_bytes()
        )


async def latest_positions(kafka: Brokers, topic: str, wanted: Callable[[bytes], bool]) -> dict[bytes, bytes | None]:
    """The latest record of each wanted key of the positions topic (None: a tombstone), read from
    its start to its end offset as of now. The topic has a single partition (streams.kafka.topics)."""
    consumer = AIOKafkaConsumer(**client_settings(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        latest: dict[bytes, bytes | None] = {}
        while await consumer.position(partition) < end:
            for records in (await consumer.getmany(partition, timeout_ms=1000)).values():
                for record in records:
                    if record.offset < end and record.key is not None and wanted(record.key):
                        latest[record.key] = record.value
        return latest
    finally:
        await consumer.stop()


def _decode(raw: bytes, reader: str) -> ReaderPosition:
    try:
        return ReaderPosition.from_bytes(raw)
    except EventDecodeError as exc:
        # Resuming from a guessed position could skip changes: refuse to start instead.
        raise RuntimeError(f"stored position of reader {reader!r} is unreadable: {exc}") from exc
