"""The metaverse processor: folds each record of the changes topic into the metaverse and
decides the contacts that follow from it.

Kept apart from faust's wiring (streams/processors/app.py): it sees the table as a mapping and
reaches Kafka only through the two callables it is given.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Awaitable, Callable, Iterable, MutableMapping

from streams.config.topology import Topology
from streams.events import (
    MAX_EVENT_BYTES,
    ContactState,
    DirectoryChange,
    EventDecodeError,
    Heartbeat,
    SnapshotMarker,
    SnapshotPhase,
    decode_change_topic,
)
from streams.kafka.range_reader import Record
from streams.rules.metaverse import SourceObject, apply_change, sweep_candidates, sweep_refusal, tombstone
from streams.rules.provisioning import ProvisioningError, desired_contact

log = logging.getLogger(__name__)

DeadLetterFn = Callable[[Record, str, str | None], Awaitable[None]]
RangeReader = Callable[[int, int, int], Awaitable[list[Record]]]
StartOffset = Callable[[int], Awaitable[int]]


class MetaverseProcessor:
    def __init__(
        self,
        topology: Topology,
        *,
        table: MutableMapping[bytes, bytes],
        emit_contact: Callable[[ContactState], Awaitable[None]],
        dead_letter: DeadLetterFn,
        partition_of: Callable[[bytes], int],
        start_offset: StartOffset,
        read_range: RangeReader,
    ) -> None:
        """`start_offset(partition)` is where processing of a newly assigned partition begins:
        the group's committed offset (every record before it was processed and is durable)."""
        self._topology = topology
        self._table = table
        self._emit_contact = emit_contact
        self._dead_letter = dead_letter
        self._partition_of = partition_of
        self._start_offset = start_offset
        self._read_range = read_range
        # Per partition: every record before this offset has been processed by this worker.
        self._next_offset: dict[int, int] = {}

    async def process(self, record: Record) -> None:
        """Process a record, first re-reading any records of its partition that never arrived.

        Offsets of the changes topic are contiguous (no transactions, no compaction), so a
        jump past the next expected offset means records were skipped on the way: faust
        0.15 can skip records produced while a worker recovers (faust issue #596). A record
        before it was processed already and is dropped.
        """
        expected = self._next_offset.get(record.partition)
        if expected is None:
            expected = await self._start_offset(record.partition)
        if record.offset < expected:
            log.debug(
                "record processed already topic=%s partition=%d offset=%d", record.topic, record.partition, record.offset
            )
            return
        if record.offset > expected:
            missing = await self._read_range(record.partition, expected, record.offset)
            log.warning(
                "skipped records re-read topic=%s partition=%d from=%d to=%d count=%d",
                record.topic, record.partition, expected, record.offset, len(missing),
            )
            for skipped in missing:
                await self._process_one(skipped)
        await self._process_one(record)
        self._next_offset[record.partition] = record.offset + 1

    def processed(self) -> dict[int, int]:
        """Per partition, the offset before which every record has been processed (what may be committed
        once the producer has flushed what processing sent)."""
        return dict(self._next_offset)

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: where their processing resumes is the committed offset again."""
        for partition in partitions:
            self._next_offset.pop(partition, None)

    async def _process_one(self, record: Record) -> None:
        async def dead_letter(reason: str, forest: str | None) -> None:
            await self._dead_letter(record, reason, forest)

        try:
            decoded = decode_change_topic(record.value)
        except EventDecodeError as exc:
            await dead_letter(str(exc), None)
            return
        if isinstance(decoded, Heartbeat):
            return
        if isinstance(decoded, SnapshotMarker):
            await self._on_marker(decoded, record.partition, dead_letter)
        elif record.key != decoded.key.encode():
            await dead_letter(f"record key does not match its change {decoded.key!r}", decoded.forest)
        else:
            await self._on_change(record.key, decoded, dead_letter)

    async def _on_change(self, key: bytes, change: DirectoryChange, dead_letter: DeadLetterFn) -> None:
        stored = self._table.get(key)
        current = SourceObject.from_bytes(stored) if stored is not None else None
        updated = apply_change(current, change)
        if updated is None:
            log.debug("duplicate change skipped key=%s position=%s", change.key, change.position)
            return
        state = updated.to_bytes()
        if len(state) > MAX_EVENT_BYTES:
            await dead_letter(f"state of {change.dn!r} would be {len(state)} bytes, over the limit", change.forest)
            return
        self._table[key] = state
        if current is not None and replace(current, snapshot=updated.snapshot) == updated:
            return  # only the snapshot mark moved: the contact is as it was
        await self._provision(updated, change.dn, dead_letter)

    async def _on_marker(self, marker: SnapshotMarker, partition: int, dead_letter: DeadLetterFn) -> None:
        if marker.phase is SnapshotPhase.BEGIN:
            log.debug("snapshot begins forest=%s snapshot=%s partition=%d", marker.forest, marker.snapshot_id, partition)
            return
        entries = {
            key: SourceObject.from_bytes(value)
            for key, value in list(self._table.items())
            if self._partition_of(key) == partition
        }
        live = sum(1 for e in entries.values() if e.forest == marker.forest and not e.deleted)
        candidates = sweep_candidates(entries.values(), marker)
        guard = self._topology.streams
        refusal = sweep_refusal(
            len(candidates), live, max_fraction=guard.sweep_max_fraction, always_allowed=guard.sweep_always_allowed
        )
        if refusal and not marker.allow_mass_delete:
            log.error("snapshot sweep refused forest=%s snapshot=%s partition=%d reason=%s",
                      marker.forest, marker.snapshot_id, partition, refusal)
            await dead_letter(refusal, marker.forest)
            return
        for entry in candidates:
            gone = tombstone(entry)
            self._table[entry.key.encode()] = gone.to_bytes()
            await self._provision(gone, entry.dn, dead_letter)
        log.info(
            "snapshot swept forest=%s snapshot=%s partition=%d deleted=%d live=%d",
            marker.forest, marker.snapshot_id, partition, len(candidates), live,
        )

    async def _provision(self, entry: SourceObject, dn: str, dead_letter: DeadLetterFn) -> None:
        try:
            contact = desired_contact(entry, self._topology)
        except ProvisioningError as exc:
            await dead_letter(str(exc), entry.forest)
            return
        if contact is None:
            return
        if len(value := contact.to_bytes()) > MAX_EVENT_BYTES:
            await dead_letter(f"contact for {dn!r} would be {len(value)} bytes, over the limit", entry.forest)
            return
        await self._emit_contact(contact)
