"""Drives the contact writer from the compacted contact-state topic.

Offsets are committed only after the writer has applied every record before them, so a
crash re-applies at most the uncommitted tail — harmless, since writes are idempotent.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from streams.config.topology import Topics
from streams.contracts import ContactWriter, PermanentError, RetriableError
from streams.events import ContactState, EventDecodeError
from streams.kafka.dead_letters import DeadLetter
from streams.monitoring.metrics import CONTACTS_DELETED, CONTACTS_WRITTEN, SINK_ERRORS, SINK_OUTAGES, SINK_UP
from streams.monitoring.outages import Outage

log = logging.getLogger(__name__)

# What the writer reports for a contact it left alone; anything else but "deleted" is a write.
_NOTHING_DONE = frozenset({"unchanged", "absent"})


class SinkRunner:
    def __init__(
        self,
        writer: ContactWriter,
        *,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        topics: Topics,
    ) -> None:
        self._writer = writer
        self._consumer = consumer
        self._producer = producer
        self._topics = topics
        self._outage = Outage("component=contact-writer", up=SINK_UP, outages=SINK_OUTAGES)

    async def run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            for partition, records in batches.items():
                await self._apply(list((await self._latest_states(records)).values()))
                await self._consumer.commit({partition: records[-1].offset + 1})

    async def _latest_states(self, records: list[ConsumerRecord]) -> dict[str, tuple[ConsumerRecord, ContactState]]:
        """The last state of each contact in the batch, in the order of those last states.

        Each record is a contact's whole desired state, so earlier ones of the same contact
        are superseded: writing them would only be undone (a burst of 100 changes to one
        user becomes one write).
        """
        latest: dict[str, tuple[ConsumerRecord, ContactState]] = {}
        for record in records:
            try:
                state = ContactState.from_bytes(record.value)
            except EventDecodeError as exc:
                await self._dead_letter(record, f"undecodable contact state: {exc}")
                continue
            latest.pop(state.anchor, None)
            latest[state.anchor] = (record, state)
        return latest

    async def _apply(self, batch: list[tuple[ConsumerRecord, ContactState]]) -> None:
        if not batch:
            return
        while True:
            try:
                results = await asyncio.to_thread(self._writer.apply_all, [state for _, state in batch])
                break
            except RetriableError as exc:
                SINK_ERRORS.labels("unavailable").inc()
                await asyncio.sleep(self._outage.failed(exc))
        self._outage.succeeded()
        for (record, state), result in zip(batch, results):
            if isinstance(result, PermanentError):
                await self._dead_letter(record, str(result))
                continue
            if result == "deleted":
                CONTACTS_DELETED.inc()
            elif result not in _NOTHING_DONE:
                CONTACTS_WRITTEN.inc()
            log.info("contact %s anchor=%s dn=%s", result, state.anchor, state.dn)

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        SINK_ERRORS.labels("rejected").inc()
        letter = DeadLetter(
            stage="contact-writer",
            reason=reason,
            key=record.key,
            value=record.value,
            origin_topic=record.topic,
            origin_partition=record.partition,
            origin_offset=record.offset,
        )
        letter.log()
        await self._producer.send_and_wait(
            self._topics.errors, key=letter.key, value=letter.value, headers=letter.headers()
        )


