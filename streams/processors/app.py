"""The faust application: the metaverse engine's tables, and the one agent that feeds it.

The engine (streams/processors/engine.py) consumes seven topics: directory changes (keyed by
source anchor), join claims (by join key), links (by anchor), person changes (by person id),
delete requests (partition 0), and for person sync site membership changes and login claims
(both by login). Every table is keyed like the topic whose records write it, and
faust stores a table entry in the partition of the record being processed, so each table is
partitioned exactly like its topic. All topics have the same partition count, so faust assigns
partition p of every topic and table to the same worker; several workers split the partitions.

At-least-once: these topics' offsets are committed by idsync, not faust (see
streams/kafka/offset_commits.py), only after the producer flushed the changelogs and messages
that processing sent; every stage is idempotent, so what a crash replays changes nothing.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import faust
from faust.types import TP

from streams.config.metaverse import engine_settings
from streams.config.topology import Topology
from streams.events import Heartbeat
from streams.kafka.clients import broker_credentials
from streams.kafka.dead_letters import DeadLetter
from streams.kafka.lag import lag_probe
from streams.kafka.offset_commits import ProcessedOffsetCommitter
from streams.kafka.range_reader import RangeReader, Record
from streams.processors.engine import MetaverseEngine
from streams.processors.metaverse import MetaverseProcessor
from streams.processors.stages import EngineContext

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_SECONDS = 30.0
# Tables, by name: each has a changelog topic <app_id>-<name>-changelog.
CONNECTOR_SPACE_TABLE = "connector-space"
# Person sync's login index: `idsync sites` reads its changelog for the members of each site.
SITE_LOGINS_TABLE = "site-logins"
_ROCKSDB_OPTIONS = {"driver": "rocksdict", "write_buffer_size": 8 * 1024**2, "max_write_buffer_number": 2,
                    "block_cache_size": 16 * 1024**2}
_RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def create_app(topology: Topology, *, engine: bool = True) -> faust.App:
    """The faust app; without `engine` a bare one, only hosting the components added to it (a
    worker of readers or sinks alone: `idsync run --components`)."""
    kafka = topology.kafka
    settings = engine_settings(topology)
    topics = settings.topics
    app = faust.App(
        topology.streams.app_id,
        broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
        broker_client_id=kafka.client_id,
        broker_credentials=broker_credentials(kafka.security),
        # On disk, a restart recovers the tables from local state and the changelogs' tail.
        store="rocksdb://" if topology.streams.state_store == "rocksdb" else "memory://",
        datadir=str(topology.streams.state_dir),
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        broker_session_timeout=topology.streams.session_timeout_seconds,
        broker_heartbeat_interval=topology.streams.session_timeout_seconds / 5,
        producer_acks=-1,
        # Every record the engine handles sends one or more: batches that wait a few ms to fill
        # cost far less per record than a produce request each (bench/pipeline.py: 179 contacts/s
        # at 0 ms, 304/s at 10 ms), for that much latency per hop of a lone change.
        producer_linger=topology.streams.producer_linger_ms / 1000,
        producer_max_batch_size=512 * 1024,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # Exactly-once crashes on rebalance in faust (issues #323, #517): stay at-least-once.
        processing_guarantee="at_least_once",
    )
    if not engine:
        return app
    # acks=False: faust neither tracks nor commits these topics' offsets; ProcessedOffsetCommitter does.
    consumed = app.topic(*topics.consumed(), acks=False, **_RAW)
    outputs = {name: app.topic(name, **_RAW) for name in {*topics.consumed(), topics.contacts, topics.conflicts,
                                                           topics.held_deletes, topics.errors, topics.site_writes}}

    def table(name: str) -> faust.Table:
        # bytes key and value types make faust use its raw serializer: values are our own orjson.
        # faust's RocksDB defaults (64 MiB write buffers, three of them, a 2 GiB block cache) are
        # per table and partition: 18 databases here. Small buffers keep a worker's memory
        # proportional to its data (bench/restart.py).
        options = dict(_ROCKSDB_OPTIONS) if topology.streams.state_store == "rocksdb" else None
        return app.Table(name, default=None, partitions=kafka.partitions, key_type=bytes, value_type=bytes,
                         options=options)

    async def send(topic: str, key: bytes, value: bytes | None, partition: int | None = None) -> None:
        await outputs[topic].send(key=key, value=value, partition=partition)

    metaverse = MetaverseEngine(EngineContext(
        settings=settings,
        send=send,
        partition_of=lambda key: app.producer.key_partition(topics.changes, key).partition,
        space=table(CONNECTOR_SPACE_TABLE),
        index=table("join-index"),
        persons=table("persons"),
        breaker=table("delete-breaker"),
        clock=time.time,
        logins=table(SITE_LOGINS_TABLE),
        profiles=table("profiles"),
    ))

    async def dead_letter(record: Record, reason: str, forest: str | None) -> None:
        letter = DeadLetter(
            stage="metaverse", reason=reason, key=record.key, value=record.value, forest=forest,
            origin_topic=record.topic, origin_partition=record.partition, origin_offset=record.offset,
        )
        letter.log()
        await outputs[topics.errors].send(key=letter.key, value=letter.value, headers=letter.headers())

    # The group's committed offsets, read once for every topic when the first is needed and taken
    # out one by one: a partition assigned again later must read its offset afresh.
    unclaimed_start_offsets: dict[tuple[str, int], int] = {}

    async def start_offset(topic: str, partition: int) -> int:
        if (topic, partition) not in unclaimed_start_offsets:
            async with lag_probe(kafka) as probe:
                for name in topics.consumed():
                    positions = await probe.positions(topology.streams.app_id, name)
                    unclaimed_start_offsets.update({(name, p): offset for p, offset in positions.items()})
        return unclaimed_start_offsets.pop((topic, partition))

    processor = MetaverseProcessor(
        handle=metaverse.process,
        dead_letter=dead_letter,
        start_offset=start_offset,
        read_range=RangeReader(kafka=kafka),
    )

    async def commit_offsets(offsets: dict[tuple[str, int], int]) -> bool:
        # faust's consumer runs aiokafka in a thread of its own; this is its commit, which only
        # commits assigned partitions and reports a commit refused after a rebalance as False.
        return await app.consumer._commit({TP(topic, p): offset for (topic, p), offset in offsets.items()})

    committer = ProcessedOffsetCommitter(processed=processor.processed, flush=app.producer.flush, commit=commit_offsets)

    # Concurrency 1: one record at a time, in offset order per partition; the stages never
    # interleave their reads and writes of the tables.
    @app.agent(consumed, concurrency=1)
    async def maintain_metaverse(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            await processor.process(Record(message.key, message.value, message.topic, message.partition, message.offset))

    @app.timer(interval=topology.streams.commit_interval_seconds)
    async def commit_processed_offsets() -> None:
        await committer.commit()

    @app.on_partitions_revoked.connect
    async def commit_before_revocation(_app: faust.App, revoked: set[TP], **_: Any) -> None:
        # faust has waited for the agent and flushed the producer: commit what it finished, then
        # let the partitions' next owner (maybe this worker) start from the committed offsets.
        partitions = {(tp.topic, tp.partition) for tp in revoked if tp.topic in topics.consumed()}
        await committer.commit(partitions)
        committer.forget(partitions)
        processor.forget(partitions)
        unclaimed_start_offsets.clear()

    @app.on_before_shutdown.connect
    async def commit_before_shutdown(_app: faust.App, **_: Any) -> None:
        await committer.commit()

    @app.timer(interval=HEARTBEAT_INTERVAL_SECONDS)
    async def send_heartbeats() -> None:
        # A heartbeat on every partition shows the processor records skipped before it even
        # where no other record follows.
        value = Heartbeat(sent_at=datetime.now(timezone.utc).isoformat()).to_bytes()
        for name in topics.consumed():
            for partition in range(kafka.partitions):
                await outputs[name].send(key=b"heartbeat", value=value, partition=partition)

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
