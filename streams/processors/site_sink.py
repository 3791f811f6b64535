"""Drives the profile writer of one site store from the site-writes topic (issue #10, DOWN).

Each record is applied on its own, in partition order: a SiteWrite names only the properties
that changed, so unlike contact states (sink_runner.py) two writes of one member do not supersede
each other. A partition's offset is committed only after every record before it was applied
(or skipped for good), so a crash re-applies at most the uncommitted tail, and writing the same
properties twice writes nothing (SiteWriter.write_properties is idempotent).

- The store down (RetriableError): the same record again with backoff, never skipped and never
  committed past; reported as an outage (one log line when it starts, one when it ends, the
  writer's up gauge and outage counter labelled by store).
- The login no longer a member (NotAMember): the member left the site after the write was
  decided; logged at INFO and skipped. Membership lists are never altered by a write.
- Any other PermanentError: the record is dead-lettered to the error topic (stage
  ``site-writer``) and the writer goes on.
- Writes of other stores share the topic: they are passed over (and committed past), told apart
  by their key, ``<store>/<site>/<login>``.

Property values are personal data: logs name the properties, never their values.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from streams.config.topology import Topics
from streams.contracts import NeedsAttention, NotAMember, PermanentError, RetriableError, SiteWriter
from streams.events import EventDecodeError
from streams.kafka.dead_letters import DeadLetter
from streams.monitoring.backoff import Backoff
from streams.monitoring.metrics import SITE_SINK_OUTAGES, SITE_SINK_UP, SITE_WRITES, STAGE_RECORDS, observe_sink_latency
from streams.monitoring.outages import Outage
from streams.site_events import SiteWrite

log = logging.getLogger(__name__)

STAGE = "site-writer"
# How often the writer tries again when the store refuses it for a reason only a person can mend.
ATTENTION_RETRY_SECONDS = 60.0
WRITTEN, UNCHANGED, SKIPPED, ERROR = "written", "unchanged", "skipped", "error"


def site_writer_group(app_id: str, store: str) -> str:
    """The consumer group of a site store's writer on the site-writes topic."""
    return f"{app_id}-site-writer-{store}"


def sink_label(store: str) -> str:
    """The `sink` label of the latency histogram for a site store."""
    return f"site:{store}"


class SiteSinkRunner:
    def __init__(self, writer: SiteWriter, *, store: str, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer,
                 topics: Topics) -> None:
        """`consumer` is subscribed to the site-writes topic in the store's group
        (site_writer_group), with auto-commit off."""
        self._writer = writer
        self._store = store
        self._consumer = consumer
        self._producer = producer
        self._topics = topics
        self._key_prefix = f"{store}/".encode()
        self._outage = Outage(f"component=site-writer store={store}", up=SITE_SINK_UP.labels(store),
                              outages=SITE_SINK_OUTAGES.labels(store), backoff=Backoff(first=0.5, cap=30.0))
        # A dead letter Kafka would not take is retried as a write is, under an outage of its own.
        self._kafka_outage = Outage(f"component=site-writer store={store} kafka=errors-topic",
                                    up=SITE_SINK_UP.labels(store), outages=SITE_SINK_OUTAGES.labels(store))

    async def run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            for partition, records in batches.items():
                for record in records:
                    await self.handle(record)
                await self._commit(partition, records[-1].offset + 1)

    async def handle(self, record: ConsumerRecord) -> str | None:
        """Apply one record of the site-writes topic; returns the outcome (None: another store's)."""
        # Keyed <store>/<site>/<login>: each store's writer dead-letters only its own bad records.
        if not (record.key or b"").startswith(self._key_prefix):
            return None
        try:
            write = SiteWrite.from_bytes(record.value)
        except EventDecodeError as exc:
            await self._dead_letter(record, f"undecodable site write: {exc}")
            outcome = ERROR
        else:
            if write.store != self._store:
                return None
            outcome = await self._apply(write, record)
        STAGE_RECORDS.labels(STAGE).inc()
        SITE_WRITES.labels(self._store, outcome).inc()
        return outcome

    async def _apply(self, write: SiteWrite, record: ConsumerRecord) -> str:
        while True:
            try:
                changed = await asyncio.to_thread(self._writer.write_properties, write.site, write.login,
                                                  dict(write.properties))
            except RetriableError as exc:
                await asyncio.sleep(self._outage.failed(exc))
                continue
            except NeedsAttention as exc:
                # No record is at fault: nothing is dead-lettered, the record waits.
                delay = max(self._outage.failed(exc), ATTENTION_RETRY_SECONDS)
                log.error("site writer needs attention store=%s error=%r retry_in=%.0fs", self._store, str(exc), delay)
                await asyncio.sleep(delay)
                continue
            except NotAMember:
                self._outage.succeeded()
                log.info("site write skipped, no longer a member store=%s site=%s login=%s person=%s",
                         self._store, write.site, write.login, write.person)
                return SKIPPED
            except PermanentError as exc:
                self._outage.succeeded()
                await self._dead_letter(record, str(exc))
                return ERROR
            break
        self._outage.succeeded()
        if not changed:
            log.debug("site write unchanged store=%s site=%s login=%s", self._store, write.site, write.login)
            return UNCHANGED
        observe_sink_latency(sink_label(self._store), write.changed_at)
        log.info("site write store=%s site=%s login=%s person=%s reason=%s properties=%s", self._store, write.site,
                 write.login, write.person, write.reason, ",".join(sorted(changed)))
        return WRITTEN

    async def _commit(self, partition: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({partition: offset})
        except KafkaError as exc:
            # A rebalance took the partition away: its next owner re-applies from the last commit
            # (idempotent writes), so nothing is lost; this worker goes on with what it holds.
            log.warning("site writer offsets not committed store=%s topic=%s partition=%d offset=%d error=%r",
                        self._store, partition.topic, partition.partition, offset, str(exc))

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        letter = DeadLetter(stage=STAGE, reason=reason, key=record.key, value=record.value, origin_topic=record.topic,
                            origin_partition=record.partition, origin_offset=record.offset)
        letter.log()
        while True:
            try:
                await self._producer.send_and_wait(self._topics.errors, key=letter.key, value=letter.value,
                                                   headers=letter.headers())
            except KafkaError as exc:
                await asyncio.sleep(self._kafka_outage.failed(exc))
                continue
            self._kafka_outage.succeeded()
            return
