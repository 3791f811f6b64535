"""The faust application: the metaverse table and the processor that keeps it current.

Directory changes come in keyed by ``forest/object_id``; the metaverse table is keyed the
same way so each entry lives in the partition of its events (faust shards a table by the
partition of the event being processed).  For every applied change the processor emits
the contact's desired state to the compacted contacts topic, which the sink applies.

At-least-once: the changes topic's offsets are committed by idsync, not faust (see
streams/kafka/offset_commits.py), only after the producer flushed the changelog and contact states
that processing sent; re-delivered changes are recognised by their source position.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import faust
from faust.types import TP

from streams.config.topology import Topology
from streams.events import ContactState, Heartbeat
from streams.kafka.dead_letters import DeadLetter
from streams.kafka.lag import group_positions
from streams.kafka.offset_commits import ProcessedOffsetCommitter
from streams.kafka.range_reader import RangeReader, Record
from streams.processors.metaverse import MetaverseProcessor

log = logging.getLogger(__name__)

METAVERSE_TABLE = "metaverse"
HEARTBEAT_INTERVAL_SECONDS = 30.0


def create_app(topology: Topology) -> faust.App:
    kafka = topology.kafka
    app = faust.App(
        topology.streams.app_id,
        broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
        store="memory://",
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        broker_session_timeout=topology.streams.session_timeout_seconds,
        broker_heartbeat_interval=topology.streams.session_timeout_seconds / 5,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # Exactly-once crashes on rebalance in faust (issues #323, #517): stay at-least-once.
        processing_guarantee="at_least_once",
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    # acks=False: faust neither tracks nor commits this topic's offsets; ProcessedOffsetCommitter does.
    changes = app.topic(kafka.topics.changes, acks=False, **raw)
    contacts = app.topic(kafka.topics.contacts, **raw)
    errors = app.topic(kafka.topics.errors, **raw)
    # bytes key and value types make faust use its raw serializer: values are our own orjson.
    metaverse = app.Table(
        METAVERSE_TABLE, default=None, partitions=kafka.partitions, key_type=bytes, value_type=bytes
    )

    async def dead_letter(record: Record, reason: str, forest: str | None) -> None:
        letter = DeadLetter(
            stage="metaverse",
            reason=reason,
            key=record.key,
            value=record.value,
            forest=forest,
            origin_topic=record.topic,
            origin_partition=record.partition,
            origin_offset=record.offset,
        )
        letter.log()
        await errors.send(key=letter.key, value=letter.value, headers=letter.headers())

    async def emit_contact(contact: ContactState) -> None:
        await contacts.send(key=contact.anchor.encode(), value=contact.to_bytes())

    # The group's committed offsets, read once for all partitions when the first is needed and
    # taken out one by one: a partition assigned again later must read its offset afresh.
    unclaimed_start_offsets: dict[int, int] = {}

    async def start_offset(partition: int) -> int:
        if partition not in unclaimed_start_offsets:
            unclaimed_start_offsets.update(
                await group_positions(kafka.bootstrap_servers, topology.streams.app_id, kafka.topics.changes)
            )
        return unclaimed_start_offsets.pop(partition)

    processor = MetaverseProcessor(
        topology,
        table=metaverse,
        emit_contact=emit_contact,
        dead_letter=dead_letter,
        partition_of=lambda key: app.producer.key_partition(kafka.topics.changes, key).partition,
        start_offset=start_offset,
        read_range=RangeReader(bootstrap_servers=kafka.bootstrap_servers, topic=kafka.topics.changes),
    )

    async def commit_offsets(offsets: dict[int, int]) -> bool:
        # faust's consumer runs aiokafka in a thread of its own; this is its commit, which only
        # commits assigned partitions and reports a commit refused after a rebalance as False.
        return await app.consumer._commit({TP(kafka.topics.changes, p): offset for p, offset in offsets.items()})

    committer = ProcessedOffsetCommitter(
        processed=processor.processed, flush=app.producer.flush, commit=commit_offsets
    )

    # Concurrency 1: the processor handles a partition's records one at a time, in offset order.
    @app.agent(changes, concurrency=1)
    async def maintain_metaverse(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            await processor.process(
                Record(message.key, message.value, message.topic, message.partition, message.offset)
            )

    @app.timer(interval=topology.streams.commit_interval_seconds)
    async def commit_processed_offsets() -> None:
        await committer.commit()

    @app.on_partitions_revoked.connect
    async def commit_before_revocation(_app: faust.App, revoked: set[TP], **_: Any) -> None:
        # faust has waited for the agent and flushed the producer: commit what it finished, then
        # let the partitions' next owner (maybe this worker) start from the committed offsets.
        partitions = {tp.partition for tp in revoked if tp.topic == kafka.topics.changes}
        await committer.commit(partitions)
        committer.forget(partitions)
        processor.forget(partitions)
        unclaimed_start_offsets.clear()

    @app.on_before_shutdown.connect
    async def commit_before_shutdown(_app: faust.App, **_: Any) -> None:
        await committer.commit()

    @app.timer(interval=HEARTBEAT_INTERVAL_SECONDS)
    async def send_heartbeats() -> None:
        value = Heartbeat(sent_at=datetime.now(timezone.utc).isoformat()).to_bytes()
        for partition in range(kafka.partitions):
            await changes.send(key=b"heartbeat", value=value, partition=partition)

    return app


def add_component(app: faust.App, name: str, run: Callable[[], Awaitable[Any]]) -> None:
    """Run a connector loop for the life of the worker; if it fails, the worker stops."""

    async def supervised() -> None:
        try:
            await run()
        except Exception as exc:
            log.exception("component failed component=%s", name)
            await app.crash(exc)

    supervised.__name__ = f"component_{name}"
    app.task(supervised)
