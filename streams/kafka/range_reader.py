"""Reading a given offset range of one partition, outside any consumer group."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.clients import Brokers, client_settings


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a topic idsync consumes, as faust or a plain consumer delivered it."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


class RangeReader:
    def __init__(self, *, kafka: Brokers) -> None:
        self._kafka = kafka

    async def __call__(self, topic: str, partition: int, start: int, stop: int) -> list[Record]:
        """Records with start <= offset < stop (fewer if retention already deleted some)."""
        # earliest: a start that retention already removed moves to the oldest record left.
        consumer = AIOKafkaConsumer(
            **client_settings(self._kafka), enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            records: list[Record] = []
            while await consumer.position(tp) < stop:
                for fetched in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    if fetched.offset < stop:
                        records.append(Record(fetched.key, fetched.value, topic, partition, fetched.offset))
            return records
        finally:
            await consumer.stop()
