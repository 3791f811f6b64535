"""Connector space and join index: the first two stages of the metaverse engine.

- Changes (keyed by source anchor) fold into the connector space; what follows for the
  object's person is decided by streams/rules/connector_space.py.
- Claims, resolutions and probes (keyed by join key) run the join index
  (streams/rules/join.py); links and probe answers come back keyed by anchor.
- Central forest first: when the central forest's reader says its initial state is published
  (a snapshot's END marker, or its first read after a start), each partition waits until every
  central object it holds is joined, then tells every person partition (CentralBarrier). No
  contact is exported before every partition did, so existing contacts are adopted, not doubled.
"""

from __future__ import annotations

import logging

from streams.events import DirectoryChange, ReaderCaughtUp, SnapshotMarker, SnapshotPhase
from streams.metaverse_events import (
    CentralBarrier,
    JoinClaim,
    JoinLink,
    JoinProbe,
    JoinResolve,
    ProbeAnswer,
)
from streams.processors.stages import EngineContext, partition_key
from streams.rules.connector_space import (
    JoinPolicy,
    Message,
    SpaceEntry,
    after_change,
    after_link,
    after_probe_answer,
    joinable,
)
from streams.rules.join import Forward, KeyState, Link, Resolve, on_claim, on_probe, on_resolve
from streams.rules.metaverse import apply_change, sweep_candidates, sweep_refusal, tombstone

log = logging.getLogger(__name__)

_WAITING, _PASSED = "waiting", "passed"


class SpaceStage:
    def __init__(self, context: EngineContext) -> None:
        self._c = context
        self._s = context.settings
        # Per partition waiting at the barrier: central anchors not joined yet (rebuilt from the
        # table after a restart).
        self._unjoined: dict[int, set[bytes]] = {}

    # --- changes topic ---------------------------------------------------------------------

    async def on_change(self, key: bytes, change: DirectoryChange, partition: int) -> str | None:
        """Fold a change; returns a reason when it must go to the error topic instead."""
        stored = self._c.space.get(key)
        entry = SpaceEntry.from_bytes(stored) if stored is not None else None
        updated = apply_change(entry.object if entry else None, change)
        if updated is None:
            if entry is not None:
                # A re-delivery: what it sent may not have reached Kafka before a crash.
                await self._follow(key, entry, partition)
            return None
        entry = SpaceEntry(object=updated, link=entry.link) if entry else SpaceEntry(object=updated)
        await self._follow(key, entry, partition)
        return None

    async def on_marker(self, marker: SnapshotMarker | ReaderCaughtUp, partition: int) -> str | None:
        reason = None
        if isinstance(marker, SnapshotMarker):
            if marker.phase is SnapshotPhase.BEGIN:
                return None
            reason = await self._sweep(marker, partition)
        if marker.forest == self._s.central_forest:
            await self._central_state_read(partition)
        return reason

    # --- join index (keyed by join key) ----------------------------------------------------

    async def on_join(self, key: bytes, event: JoinClaim | JoinResolve | JoinProbe) -> None:
        raw = self._c.index.get(key)
        state = KeyState.from_bytes(raw) if raw is not None else KeyState()
        if isinstance(event, JoinProbe):
            state, owner = on_probe(state, event.person)
            self._c.index[key] = state.to_bytes()
            answer = ProbeAnswer(anchor=event.anchor, probe_id=event.probe_id, key=event.key, owner=owner)
            await self._c.send(self._s.topics.links, event.anchor.encode(), answer.to_bytes())
            return
        if isinstance(event, JoinClaim):
            state, messages = on_claim(state, event.claim)
        else:
            state, messages = on_resolve(state, Resolve(key=event.key, claim=event.claim, person=event.person))
        self._c.index[key] = state.to_bytes()
        for message in messages:
            if isinstance(message, Forward):
                await self._c.send(self._s.topics.joins, message.claim.key.encode(), JoinClaim.of(message.claim).to_bytes())
            elif isinstance(message, Resolve):
                resolve = JoinResolve.of(message.key, message.claim, message.person)
                await self._c.send(self._s.topics.joins, message.key.encode(), resolve.to_bytes())
            elif isinstance(message, Link):
                link = JoinLink(anchor=message.anchor, claim_id=message.claim_id, person=message.person,
                                settled=message.settled)
                await self._c.send(self._s.topics.links, message.anchor.encode(), link.to_bytes())

    # --- links (keyed by anchor) -----------------------------------------------------------

    async def on_link(self, key: bytes, event: JoinLink | ProbeAnswer, partition: int) -> None:
        stored = self._c.space.get(key)
        if stored is None:
            log.warning("link for an object the connector space does not hold anchor=%s", key.decode())
            return
        entry = SpaceEntry.from_bytes(stored)
        if isinstance(event, JoinLink):
            entry, messages = after_link(entry, event.person, self._s.join, settled=event.settled)
            self._c.space[key] = entry.to_bytes()
            await self._send_all(messages)
            await self._check_barrier(partition, key, entry)
            return
        entry, others = after_probe_answer(entry, event.probe_id, event.key, event.owner)
        self._c.space[key] = entry.to_bytes()
        if others is not None:
            await self._c.report_conflict(
                f"join:{entry.object.key}", "join-ambiguous",
                f"{entry.object.dn!r} is joined to person {entry.link.person} and its join values also "
                f"belong to {', '.join(others) or 'nobody else any more'}",
                (entry.object.key, entry.link.person or "", *others), open=bool(others),
            )

    # --- internals -------------------------------------------------------------------------

    async def _follow(self, key: bytes, entry: SpaceEntry, partition: int, *, hold_delete: bool = False) -> None:
        entry, messages = after_change(entry, self._s.join, hold_delete=hold_delete)
        self._c.space[key] = entry.to_bytes()
        await self._send_all(messages)
        if entry.link.conflicting and not joinable(entry.object, self._s.join):
            await self._c.report_conflict(
                f"join:{entry.object.key}", "join-ambiguous", f"{entry.object.dn!r} left the metaverse",
                (entry.object.key,), open=False,
            )
        await self._check_barrier(partition, key, entry)

    async def _send_all(self, messages: list[Message]) -> None:
        for message in messages:
            if isinstance(message, JoinClaim):
                await self._c.send(self._s.topics.joins, message.keys[message.step].encode(), message.to_bytes())
            elif isinstance(message, JoinProbe):
                await self._c.send(self._s.topics.joins, message.key.encode(), message.to_bytes())
            else:
                await self._c.send(self._s.topics.persons, message.person.encode(), message.to_bytes())

    async def _sweep(self, marker: SnapshotMarker, partition: int) -> str | None:
        entries = {
            key: SpaceEntry.from_bytes(value)
            for key, value in list(self._c.space.items())
            if not key.startswith(b"__") and self._c.partition_of(key) == partition
        }
        objects = [entry.object for entry in entries.values()]
        live = sum(1 for o in objects if o.forest == marker.forest and not o.deleted)
        candidates = sweep_candidates(objects, marker)
        refusal = sweep_refusal(len(candidates), live, max_fraction=self._s.sweep_max_fraction,
                                always_allowed=self._s.sweep_always_allowed)
        # Over the guard, the objects go from the metaverse (they are gone from the snapshot) but
        # the contact deletes that follow are held by the delete breaker for an operator
        # (`idsync deletes approve|reject`), like any burst of deletes.
        guarded = bool(refusal) and not marker.allow_mass_delete
        if guarded:
            log.warning("snapshot sweep over the mass-delete guard, its contact deletes are held "
                        "forest=%s snapshot=%s partition=%d reason=%s", marker.forest, marker.snapshot_id, partition, refusal)
        for obj in candidates:
            key = obj.key.encode()
            await self._follow(key, SpaceEntry(object=tombstone(obj), link=entries[key].link), partition, hold_delete=guarded)
        log.info("snapshot swept forest=%s snapshot=%s partition=%d deleted=%d live=%d held=%s",
                 marker.forest, marker.snapshot_id, partition, len(candidates), live, guarded)
        return None

    async def _central_state_read(self, partition: int) -> None:
        marker = partition_key("central-barrier", partition)
        if self._c.space.get(marker) == _PASSED.encode():
            return
        self._c.space[marker] = _WAITING.encode()
        self._unjoined[partition] = self._unjoined_central(partition)
        await self._check_barrier(partition)

    async def _check_barrier(self, partition: int, key: bytes | None = None, entry: SpaceEntry | None = None) -> None:
        marker = partition_key("central-barrier", partition)
        if self._c.space.get(marker) != _WAITING.encode():
            return
        waiting = self._unjoined.get(partition)
        if waiting is None:
            waiting = self._unjoined[partition] = self._unjoined_central(partition)
        if key is not None and entry is not None and not _waits(entry, self._s.join):
            waiting.discard(key)
        if waiting:
            return
        self._c.space[marker] = _PASSED.encode()
        log.info("central forest folded in partition=%d: contacts may be exported", partition)
        barrier = CentralBarrier(from_partition=partition).to_bytes()
        for target in range(self._s.partitions):
            await self._c.send(self._s.topics.persons, b"central-barrier", barrier, partition=target)

    def _unjoined_central(self, partition: int) -> set[bytes]:
        waiting = set()
        for key, value in list(self._c.space.items()):
            if key.startswith(b"__") or self._c.partition_of(key) != partition:
                continue
            if _waits(SpaceEntry.from_bytes(value), self._s.join):
                waiting.add(key)
        return waiting


def _waits(entry: SpaceEntry, policy: JoinPolicy) -> bool:
    """A central object the barrier waits for: one that joins and is not joined yet."""
    obj = entry.object
    return obj.forest == policy.central_forest and joinable(obj, policy) and entry.link.person is None
