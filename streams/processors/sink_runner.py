"""Drives the contact writer from the compacted contact-state topic.

Offsets are committed only after the writer has applied every record before them, so a
crash re-applies at most the uncommitted tail — harmless, since writes are idempotent.

A state the writer reports Blocked (its name is held by an entry idsync must not take over) is
reported on the conflicts topic (kind ``dn-taken``, id ``dn:<anchor>``) and retried with backoff
(``retry_first_seconds`` doubling up to ``retry_max_seconds``), always with the contact's latest
state; its partition's committed offset stays at that record until it is applied, so a restart
applies it again. Once it is applied (the blocker went, or a newer state needs no such name),
the conflict is reported closed.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Awaitable, Callable, Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from streams.config.topology import Topics
from streams.contracts import Blocked, ContactWriter, NeedsAttention, PermanentError, RetriableError
from streams.events import ContactState, EventDecodeError
from streams.kafka.clients import Brokers
from streams.kafka.compacted import latest_values
from streams.kafka.dead_letters import DeadLetter
from streams.metaverse_events import Conflict
from streams.monitoring.metrics import (
    CONTACTS_DELETED, CONTACTS_WRITTEN, SINK_ERRORS, SINK_OUTAGES, SINK_UP, STAGE_RECORDS,
    observe_sink_latency,
)
from streams.monitoring.outages import Outage
from streams.processors.blocked import BlockedContacts

log = logging.getLogger(__name__)

# How often the writer tries again when its connection needs a person (NeedsAttention).
ATTENTION_RETRY_SECONDS = 60.0
# What the writer reports for a contact it left alone; anything else but "deleted" is a write.
_NOTHING_DONE = frozenset({"unchanged", "absent"})
DN_TAKEN = "dn-taken"

Pending = tuple[ConsumerRecord, ContactState]
OpenConflicts = Callable[[], Awaitable[Mapping[str, Conflict]]]


def dn_conflict_id(anchor: str) -> str:
    return f"dn:{anchor}"


async def open_dn_conflicts(kafka: Brokers, conflicts_topic: str) -> dict[str, Conflict]:
    """The dn-taken conflicts open on the conflicts topic, by conflict id."""
    found = {}
    for value in (await latest_values(kafka, conflicts_topic)).values():
        try:
            conflict = Conflict.from_bytes(value)
        except EventDecodeError:
            continue  # not this runner's to judge: other kinds of records may share the topic
        if conflict.kind == DN_TAKEN and conflict.open:
            found[conflict.conflict_id] = conflict
    return found


class SinkRunner:
    def __init__(
        self,
        writer: ContactWriter,
        *,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        topics: Topics,
        conflicts_topic: str,
        open_conflicts: OpenConflicts | None = None,
        retry_first_seconds: float = 5.0,
        retry_max_seconds: float = 60.0,
    ) -> None:
        """`open_conflicts` reads the dn-taken conflicts already open (e.g. open_dn_conflicts), so
        that one opened before a restart is closed when its contact is finally written; it is
        called whenever partitions are assigned."""
        self._writer = writer
        self._consumer = consumer
        self._producer = producer
        self._topics = topics
        self._conflicts_topic = conflicts_topic
        self._read_open_conflicts = open_conflicts
        self._outage = Outage("component=contact-writer", up=SINK_UP, outages=SINK_OUTAGES)
        self._blocked = BlockedContacts(first_delay=retry_first_seconds, max_delay=retry_max_seconds)
        self._open: dict[str, Conflict] = {}
        self._assigned: set[TopicPartition] = set()
        # Per partition: the offset after the last record applied, and the last offset committed.
        self._done: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    async def run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            await self._follow_assignment()
            for partition, records in batches.items():
                await self._apply(list((await self._latest_states(records)).values()))
                self._done[partition] = records[-1].offset + 1
                await self._commit(partition)
            await self._retry_blocked()

    async def _follow_assignment(self) -> None:
        assigned = set(self._consumer.assignment())
        if assigned == self._assigned:
            return
        gained = assigned - self._assigned
        for partition in self._assigned - assigned:
            self._done.pop(partition, None)
            self._committed.pop(partition, None)
        for entry in self._blocked.keep_partitions(assigned):
            log.info("blocked contact left to the partition's next owner anchor=%s partition=%d",
                     entry.state.anchor, entry.record.partition)
        self._assigned = assigned
        if gained and self._read_open_conflicts is not None:
            self._open = dict(await self._read_open_conflicts())

    async def _latest_states(self, records: list[ConsumerRecord]) -> dict[str, Pending]:
        """The last state of each contact in the batch, in the order of those last states.

        Each record is a contact's whole desired state, so earlier ones of the same contact
        are superseded: writing them would only be undone (a burst of 100 changes to one
        user becomes one write).
        """
        latest: dict[str, Pending] = {}
        for record in records:
            try:
                state = ContactState.from_bytes(record.value)
            except EventDecodeError as exc:
                await self._dead_letter(record, f"undecodable contact state: {exc}")
                continue
            latest.pop(state.anchor, None)
            latest[state.anchor] = (record, state)
        return latest

    async def _retry_blocked(self) -> None:
        due = self._blocked.due()
        if not due:
            return
        await self._apply([(entry.record, entry.state) for entry in due])
        for partition in {TopicPartition(entry.record.topic, entry.record.partition) for entry in due}:
            await self._commit(partition)

    async def _commit(self, partition: TopicPartition) -> None:
        """Commit the partition up to what was applied, but never past a record still blocked."""
        point = self._done.get(partition)
        if point is None:
            return
        floor = self._blocked.floor(partition)
        if floor is not None:
            point = min(point, floor)
        if point <= self._committed.get(partition, -1):
            return
        await self._consumer.commit({partition: point})
        self._committed[partition] = point

    async def _apply(self, batch: list[Pending]) -> None:
        if not batch:
            return
        while True:
            try:
                results = await asyncio.to_thread(self._writer.apply_all, [state for _, state in batch])
                break
            except RetriableError as exc:
                SINK_ERRORS.labels("unavailable").inc()
                await asyncio.sleep(self._outage.failed(exc))
            except NeedsAttention as exc:
                # No record is at fault (an untrusted certificate, StartTLS refused): nothing is
                # dead-lettered, the batch waits, and the log says so at every attempt.
                SINK_ERRORS.labels("unavailable").inc()
                delay = max(self._outage.failed(exc), ATTENTION_RETRY_SECONDS)
                log.error("contact writer needs attention error=%r retry_in=%.0fs", str(exc), delay)
                await asyncio.sleep(delay)
        self._outage.succeeded()
        for (record, state), result in zip(batch, results):
            STAGE_RECORDS.labels("contact-writer").inc()
            if isinstance(result, Blocked):
                await self._held(record, state, result)
                continue
            await self._unblocked(state, result)
            if isinstance(result, PermanentError):
                await self._dead_letter(record, str(result))
                continue
            if result == "deleted":
                CONTACTS_DELETED.inc()
            elif result not in _NOTHING_DONE:
                CONTACTS_WRITTEN.inc()
                observe_sink_latency("central", state.changed_at)
            log.info("contact %s anchor=%s dn=%s", result, state.anchor, state.dn)

    async def _held(self, record: ConsumerRecord, state: ContactState, blocked: Blocked) -> None:
        entry = self._blocked.block(record, state, blocked)
        conflict_id = dn_conflict_id(state.anchor)
        known = self._open.get(conflict_id)
        conflict = _conflict(conflict_id, open=True, reason=f"{blocked.dn}: {blocked.reason}",
                             parties=(state.anchor, blocked.blocker_dn))
        if known is not None and (known.reason, known.parties) == (conflict.reason, conflict.parties):
            log.debug("contact still blocked anchor=%s dn=%s blocker=%s retry_in=%.0fs",
                      state.anchor, blocked.dn, blocked.blocker_dn, entry.delay)
            return
        log.warning("contact blocked anchor=%s dn=%s blocker=%s reason=%r topic=%s[%d] offset=%d retry_in=%.0fs",
                    state.anchor, blocked.dn, blocked.blocker_dn, blocked.reason, record.topic, record.partition,
                    record.offset, entry.delay)
        await self._report(conflict)

    async def _unblocked(self, state: ContactState, result: str | PermanentError) -> None:
        """The contact's latest state is no longer blocked: its conflict, if open, is over."""
        self._blocked.release(state.anchor)
        known = self._open.get(dn_conflict_id(state.anchor))
        if known is None:
            return
        if isinstance(result, PermanentError):
            reason = f"the contact's latest state cannot be applied and was dead-lettered: {result}"
        else:
            reason = f"the contact is written ({result}, dn={state.dn})" if state.present else "the contact is no longer wanted"
        log.info("contact unblocked anchor=%s result=%s dn=%s", state.anchor, result, state.dn)
        await self._report(_conflict(known.conflict_id, open=False, reason=reason, parties=known.parties))

    async def _report(self, conflict: Conflict) -> None:
        await self._producer.send_and_wait(self._conflicts_topic, key=conflict.conflict_id.encode(), value=conflict.to_bytes())
        if conflict.open:
            self._open[conflict.conflict_id] = conflict
        else:
            self._open.pop(conflict.conflict_id, None)
        log.info("conflict %s conflict_id=%s kind=%s parties=%s", "opened" if conflict.open else "closed",
                 conflict.conflict_id, conflict.kind, ",".join(conflict.parties))

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


def _conflict(conflict_id: str, *, open: bool, reason: str, parties: tuple[str, ...]) -> Conflict:
    return Conflict(conflict_id=conflict_id, kind=DN_TAKEN, open=open, reason=reason, parties=parties,
                    at=datetime.now(timezone.utc).isoformat())
