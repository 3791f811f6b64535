"""The error topic read back: each dead letter with its headers decoded (streams/kafka/dead_letters.py
writes them), and the ledger of the ones replayed to their origin topic.

The ledger is a compacted topic beside the error topic (`<errors>.replays`), one record per
replayed dead letter, keyed by the dead letter's partition and offset on the error topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from streams.events import EventDecodeError, check_schema, encode, parse
from streams.kafka.dead_letters import HEADER_PREFIX

# On a replayed copy: which dead letter it is a copy of (`<error topic>/<partition>:<offset>`).
REPLAY_HEADER = "idsync.replay.of"
_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorRecord:
    partition: int
    offset: int
    timestamp_ms: int
    stage: str
    reason: str
    forest: str | None
    origin_topic: str | None
    origin_partition: int | None
    origin_offset: int | None
    source_position: str | None
    key: bytes | None
    value: bytes | None

    @property
    def error_id(self) -> str:
        """The dead letter's place on the error topic: `partition:offset`."""
        return f"{self.partition}:{self.offset}"

    @property
    def origin(self) -> str | None:
        """`topic[partition]@offset` of the record that failed, when it came from a topic."""
        if self.origin_topic is None:
            return None
        return f"{self.origin_topic}[{self.origin_partition}]@{self.origin_offset}"

    @classmethod
    def from_record(cls, record: ConsumerRecord) -> ErrorRecord:
        headers = {name.removeprefix(HEADER_PREFIX): value.decode(errors="replace")
                   for name, value in record.headers or () if name.startswith(HEADER_PREFIX) and value is not None}
        return cls(
            partition=record.partition, offset=record.offset, timestamp_ms=record.timestamp,
            stage=headers.get("stage", "unknown"), reason=headers.get("reason", ""), forest=headers.get("forest"),
            origin_topic=headers.get("topic"), origin_partition=_number(headers.get("partition")),
            origin_offset=_number(headers.get("offset")), source_position=headers.get("source.position"),
            key=record.key, value=record.value,
        )


def _number(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReplay:
    """A dead letter sent again to its origin topic: which one, where the copy landed, and when."""

    SCHEMA = "idsync.error-replay"
    VERSION = 1

    error: str  # the dead letter's partition:offset on the error topic
    stage: str
    topic: str
    partition: int
    offset: int
    at: str

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> ErrorReplay:
        data = parse(raw)
        check_schema(data, cls)
        try:
            return cls(error=str(data["error"]), stage=str(data["stage"]), topic=str(data["topic"]),
                       partition=int(data["partition"]), offset=int(data["offset"]), at=str(data["at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


def replays_topic(errors_topic: str) -> str:
    return f"{errors_topic}.replays"


async def read_topic(client_options: Mapping[str, Any], topic: str, *, follow: bool = False,
                     poll_seconds: float = 1.0) -> AsyncIterator[ConsumerRecord | None]:
    """Every record of `topic` from its start, in offset order per partition; then None once the
    end offsets it had when reading began are reached. With `follow`, then every new record as it
    comes, until cancelled. A topic that does not exist reads as empty (`follow` waits for it)."""
    partitions = await _partitions(client_options, topic)
    caught_up = not partitions
    if caught_up:
        yield None
        if not follow:
            return
        while not partitions:
            await asyncio.sleep(poll_seconds)
            partitions = await _partitions(client_options, topic)
    consumer = AIOKafkaConsumer(**client_options, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        later: list[ConsumerRecord] = []  # past the end offsets while the rest is read
        while True:
            if not caught_up and all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                caught_up = True
                yield None
                if not follow:
                    return
                for record in later:
                    yield record
            batches = await consumer.getmany(*partitions, timeout_ms=int(poll_seconds * 1000))
            for tp, records in sorted(batches.items(), key=lambda item: item[0].partition):
                for record in records:
                    if caught_up or record.offset < ends[tp]:
                        yield record
                    else:
                        later.append(record)
    finally:
        await consumer.stop()


async def read_replays(client_options: Mapping[str, Any], errors_topic: str) -> dict[str, ErrorReplay]:
    """The ledger: each replayed dead letter's latest replay, by its partition:offset."""
    replays: dict[str, ErrorReplay] = {}
    async with aclosing(read_topic(client_options, replays_topic(errors_topic))) as records:
        async for record in records:
            if record is None:
                break
            try:
                replay = ErrorReplay.from_bytes(record.value)
            except EventDecodeError:
                continue
            replays[replay.error] = replay
    return replays


async def ensure_replays_topic(client_options: Mapping[str, Any], errors_topic: str, replication_factor: int) -> None:
    admin = AIOKafkaAdminClient(**client_options)
    await admin.start()
    try:
        topic = replays_topic(errors_topic)
        if topic in await admin.list_topics():
            return
        response = await admin.create_topics([NewTopic(name=topic, num_partitions=1,
                                                       replication_factor=replication_factor,
                                                       topic_configs={"cleanup.policy": "compact"})])
        for name, code, *message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {name!r}: error {code} {message}")
    finally:
        await admin.close()


async def _partitions(client_options: Mapping[str, Any], topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**client_options)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return []
        (description,) = await admin.describe_topics([topic])
        return [TopicPartition(topic, p["partition"]) for p in sorted(description["partitions"],
                                                                      key=lambda p: p["partition"])]
    finally:
        await admin.close()


async def key_after(client_options: Mapping[str, Any], topic: str, partition: int, offset: int,
                    key: bytes | None) -> bool:
    """Whether a record with `key` follows `offset` in the partition (up to its end offset now)."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(**client_options, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, offset + 1)
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if record.offset < end and record.key == key:
                    return True
        return False
    finally:
        await consumer.stop()
