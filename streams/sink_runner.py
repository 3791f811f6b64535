"""Drives the contact writer from the compacted contact-state topic.

Offsets are committed only after the writer has applied every record before them, so a
crash re-applies at most the uncommitted tail — harmless, since writes are idempotent.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from streams.backoff import Backoff
from streams.contracts import ContactWriter, PermanentError, RetriableError
from streams.dead_letters import DeadLetter
from streams.events import ContactState, EventDecodeError
from streams.topology import Topics

log = logging.getLogger(__name__)


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
        backoff = Backoff()
        while True:
            try:
                results = await asyncio.to_thread(self._writer.apply_all, [state for _, state in batch])
                break
            except RetriableError as exc:
                delay = backoff.next_delay()
                log.warning("contact writer waiting contacts=%d error=%s retry_in=%.1fs", len(batch), exc, delay)
                await asyncio.sleep(delay)
        for (record, state), result in zip(batch, results):
            if isinstance(result, PermanentError):
                await self._dead_letter(record, str(result))
            else:
                log.info("contact %s anchor=%s dn=%s", result, state.anchor, state.dn)

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
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


