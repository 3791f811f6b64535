"""Persons and the delete breaker: the last stages of the metaverse engine.

- Connector states (keyed by person id) update the person; the person's desired contact
  (streams/rules/gal.py) goes to the contacts topic when it changed, or when the contact in the
  central forest drifted from it (edited or deleted by hand: the central forest is read like
  every forest, and idsync's own contacts come back as the person's managed connector).
- Nothing is exported from a partition before every connector-space partition passed the
  central barrier; then the whole partition is exported at once.
- A contact that would go asks the breaker first (one partition: it counts deletes across the
  whole deployment); its decision comes back on the person's partition and is applied only if
  the person still wants no contact.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from datetime import datetime, timezone

import orjson

from streams.events import ContactState
from streams.metaverse_events import (
    CentralBarrier,
    ConnectorState,
    DeleteDecision,
    DeleteRequest,
    DeleteVerdict,
    DeleteWithdrawn,
    ExportAll,
)
from streams.processors.profiles import ProfileStage
from streams.processors.stages import EngineContext, partition_key
from streams.rules.breaker import BreakerState, admit, decided
from streams.rules.dn import DnError, same_dn
from streams.rules.gal import desired_contact
from streams.rules.person import Connector, Person, newest_change, same_forest_duplicates

log = logging.getLogger(__name__)

_BREAKER = b"__breaker__"
_HELD_PREFIX = b"held/"
# Person.exported holds the fingerprint of the last present state sent, or one of these.
ABSENT, REJECTED, PENDING = "absent", "delete-rejected", "delete-pending:"
# Starts the id of a delete a resync asks for (idsync/resync.py): a contact found in the central
# forest for a person who wants none, whatever the person last exported.
RESYNC_PREFIX = "resync:"
# Ends the id of a request that must be held whatever the window (kept in the id, so a request
# sent again after a crash is held again).
HELD_SUFFIX = "#hold"


class PersonStage:
    def __init__(self, context: EngineContext, profiles: ProfileStage) -> None:
        self._c = context
        self._s = context.settings
        self._profiles = profiles

    async def on_person_event(
        self, key: bytes, event: ConnectorState | CentralBarrier | ExportAll | DeleteDecision, partition: int
    ) -> None:
        if isinstance(event, CentralBarrier):
            await self._barrier_from(event.from_partition, partition)
            return
        if isinstance(event, ExportAll):
            if self._ready(partition):
                await self._export_partition(partition, "rebuild requested")
            return
        stored = self._c.persons.get(key)
        person = Person.from_bytes(stored) if stored is not None else Person(person_id=key.decode())
        if isinstance(event, DeleteDecision):
            await self._decided(person, event, partition)
            return
        joined = event.joined
        before = person.connectors.get(event.anchor)
        if joined is not None:
            updated = person.with_connector(joined)
        else:
            updated = person.without_connector(event.anchor, event.position)
        if updated is None:
            # A re-delivery: send again what a crash may have lost (the receivers are idempotent).
            await self._export(person, partition, force=True)
            await self._profiles.after_person(person, force=True)
            return
        await self._report_duplicates(person, updated)
        drifted = self._drifted(updated, before, joined)
        await self._export(updated, partition, force=drifted, hold=event.hold_delete)
        await self._profiles.after_person(updated)

    # --- export ----------------------------------------------------------------------------

    async def _export(self, person: Person, partition: int, *, force: bool = False, hold: bool = False) -> None:
        key = person.person_id.encode()
        if not self._ready(partition):
            self._c.persons[key] = person.to_bytes()
            return
        desired = desired_contact(person, self._s.gal)
        if desired.present:
            if person.exported.startswith(PENDING):
                # Wanted again before the breaker let its delete through: a held one is dropped.
                withdrawn = DeleteWithdrawn(person=person.person_id, request_id=person.exported[len(PENDING):])
                await self._c.send(self._s.topics.deletes, key, withdrawn.to_bytes(), partition=0)
            fingerprint = hashlib.sha256(desired.to_bytes()).hexdigest()[:16]
            if force or person.exported != fingerprint:
                # The fingerprint leaves changed_at out: a change that alters nothing on the contact
                # sends nothing. What is sent carries the newest source change, for the latency metric.
                stamped = replace(desired, changed_at=newest_change(person.connectors.values()))
                await self._c.send(self._s.topics.contacts, key, stamped.to_bytes())
                person = _exported(person, fingerprint)
        elif _wants_delete(person.exported, resend=force):
            pending = person.exported.startswith(PENDING)
            request_id = person.exported[len(PENDING):] if pending else (
                f"{person.person_id}@{self._c.clock():.6f}" + (HELD_SUFFIX if hold else "")
            )
            request = DeleteRequest(
                person=person.person_id, request_id=request_id, dn=self._managed_dn(person),
                requested_at=_now(self._c.clock()), hold=request_id.endswith(HELD_SUFFIX),
            )
            await self._c.send(self._s.topics.deletes, key, request.to_bytes(), partition=0)
            person = _exported(person, PENDING + request.request_id)
        self._c.persons[key] = person.to_bytes()

    async def _decided(self, person: Person, decision: DeleteDecision, partition: int) -> None:
        if decision.request_id.startswith(RESYNC_PREFIX):
            # A resync found this person's contact in the central forest though it wants none.
            if decision.approved and not desired_contact(person, self._s.gal).present:
                absent = ContactState(anchor=person.person_id, present=False, container_dn="")
                await self._c.send(self._s.topics.contacts, person.person_id.encode(), absent.to_bytes())
            return
        if person.exported != PENDING + decision.request_id:
            return  # the person wants a contact again, or this answer came twice
        if desired_contact(person, self._s.gal).present:
            await self._export(_exported(person, ""), partition)
            return
        if decision.approved:
            absent = ContactState(anchor=person.person_id, present=False, container_dn="")
            await self._c.send(self._s.topics.contacts, person.person_id.encode(), absent.to_bytes())
        self._c.persons[person.person_id.encode()] = _exported(person, ABSENT if decision.approved else REJECTED).to_bytes()

    def _drifted(self, person: Person, before: Connector | None, after: Connector | None) -> bool:
        """The person's own contact was changed or deleted by someone else: put it back."""
        mine = person.person_id
        if not any(c is not None and c.managed_for == mine for c in (before, after)):
            return False
        desired = desired_contact(person, self._s.gal)
        if not desired.present:
            return False
        if after is None or after.managed_for != mine:
            return True
        try:
            if desired.dn is None or not (same_dn(after.dn, desired.dn) or (desired.fallback_dn and same_dn(after.dn, desired.fallback_dn))):
                return True
        except DnError:
            return True
        for name in desired.managed_attributes:
            wanted = sorted(desired.attributes.get(name, ()))
            if sorted(after.attributes.get(name.lower(), ())) != wanted:
                return True
        return False

    def _managed_dn(self, person: Person) -> str | None:
        return next((c.dn for c in person.connectors.values() if c.managed_for == person.person_id), None)

    async def _report_duplicates(self, before: Person, after: Person) -> None:
        old = same_forest_duplicates(before.connectors.values())
        new = same_forest_duplicates(after.connectors.values())
        for forest in sorted(set(old) | set(new)):
            if old.get(forest) == new.get(forest):
                continue
            anchors = tuple(new.get(forest, old.get(forest, [])))
            await self._c.report_conflict(
                f"person:{after.person_id}:{forest}", "same-forest",
                f"{len(anchors)} objects of forest {forest} share the join values of person {after.person_id}; "
                f"values are taken from {anchors[0]} (the first by anchor)" if forest in new else "resolved",
                (after.person_id, *anchors), open=forest in new,
            )

    # --- central barrier -------------------------------------------------------------------

    def _ready(self, partition: int) -> bool:
        seen = self._c.persons.get(partition_key("barrier", partition))
        return seen is not None and len(orjson.loads(seen)) >= self._s.partitions

    async def _barrier_from(self, source: int, partition: int) -> None:
        marker = partition_key("barrier", partition)
        seen = set(orjson.loads(self._c.persons.get(marker, b"[]")))
        if source in seen:
            return
        was_ready = len(seen) >= self._s.partitions
        seen.add(source)
        self._c.persons[marker] = orjson.dumps(sorted(seen))
        if was_ready or len(seen) < self._s.partitions:
            return
        await self._export_partition(partition, "central barrier passed")

    async def _export_partition(self, partition: int, why: str) -> None:
        """Every person of the partition: contacts sent where they differ from the last sent."""
        keys = [k for k in list(self._c.persons) if not k.startswith(b"__") and self._c.partition_of(k) == partition]
        log.info("exporting partition=%d persons=%d reason=%r", partition, len(keys), why)
        for key in keys:
            await self._export(Person.from_bytes(self._c.persons[key]), partition)


class BreakerStage:
    """The delete circuit breaker, on partition 0 of the delete-requests topic."""

    def __init__(self, context: EngineContext) -> None:
        self._c = context
        self._s = context.settings

    async def on_delete_event(self, event: DeleteRequest | DeleteWithdrawn | DeleteVerdict) -> None:
        raw = self._c.breaker.get(_BREAKER)
        state = BreakerState.from_dict(orjson.loads(raw)) if raw is not None else BreakerState()
        if isinstance(event, DeleteWithdrawn):
            held_key = _HELD_PREFIX + event.person.encode()
            held = self._c.breaker.get(held_key)
            if held is not None and DeleteRequest.from_bytes(held).request_id == event.request_id:
                del self._c.breaker[held_key]
                await self._c.send(self._s.topics.held_deletes, event.person.encode(), None)
                self._c.breaker[_BREAKER] = orjson.dumps(decided(state, 1).to_dict())
                log.info("held delete withdrawn, the person wants a contact again person=%s", event.person)
            return
        if isinstance(event, DeleteRequest):
            held_key = _HELD_PREFIX + event.person.encode()
            if held_key in self._c.breaker:
                return  # held already (a re-delivery)
            state, allowed = admit(state, self._c.clock(), limit=self._s.delete_limit,
                                   window_seconds=self._s.delete_window_seconds, hold=event.hold)
            self._c.breaker[_BREAKER] = orjson.dumps(state.to_dict())
            if allowed:
                await self._answer(event, approved=True)
                return
            self._c.breaker[held_key] = event.to_bytes()
            await self._c.send(self._s.topics.held_deletes, event.person.encode(), event.to_bytes())
            log.warning("delete held by the breaker person=%s dn=%s held=%d", event.person, event.dn, state.held)
            return
        if event.persons:  # looked up one by one: a verdict names up to a thousand of maybe many more held
            chosen = [key for key in (_HELD_PREFIX + person.encode() for person in event.persons)
                      if key in self._c.breaker]
        else:
            chosen = [key for key in list(self._c.breaker) if key.startswith(_HELD_PREFIX)]
        for key in chosen:
            request = DeleteRequest.from_bytes(self._c.breaker[key])
            await self._answer(request, approved=event.approve)
            del self._c.breaker[key]
            await self._c.send(self._s.topics.held_deletes, request.person.encode(), None)
        self._c.breaker[_BREAKER] = orjson.dumps(decided(state, len(chosen)).to_dict())
        log.warning("held deletes %s count=%d", "approved" if event.approve else "rejected", len(chosen))

    async def _answer(self, request: DeleteRequest, *, approved: bool) -> None:
        decision = DeleteDecision(person=request.person, request_id=request.request_id, approved=approved)
        await self._c.send(self._s.topics.persons, request.person.encode(), decision.to_bytes())


def _wants_delete(exported: str, *, resend: bool) -> bool:
    """A contact was exported and must go; or a request is pending and must be sent again."""
    if exported.startswith(PENDING):
        return resend
    return exported not in ("", ABSENT, REJECTED)


def _exported(person: Person, value: str) -> Person:
    return replace(person, exported=value)


def _now(clock: float) -> str:
    return datetime.fromtimestamp(clock, timezone.utc).isoformat()
