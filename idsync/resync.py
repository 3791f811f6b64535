"""`idsync resync`: the central forest made to match the metaverse again, by replay.

The desired contact of every person is the latest record of the compacted contacts topic: the
metaverse's own output, kept by Kafka. A resync reads it whole, reads every contact that carries
a person's anchor in the central forest, and reconciles: missing contacts are created, wrong ones
corrected (both by the contact writer, idempotently), extra ones asked to the running worker's
delete breaker (a burst of them is held for `idsync deletes approve|reject`), unchanged ones are
not written. No source directory is read. It is safe while readers publish: a person who changes
meanwhile gets a newer contact state, and the contact written by the resync comes back through the
central forest's reader, where the engine puts a stale value right (drift correction).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Mapping, Sequence, TextIO

from connectors.ldap.contact_plan import Entry, attribute_changes, same_name
from connectors.ldap.contacts import LdapContactWriter
from streams.config.metaverse import engine_settings
from streams.config.topology import Topology
from streams.contracts import Blocked, PermanentError
from streams.events import ContactState, EventDecodeError
from streams.kafka.compacted import latest_values
from streams.kafka.lag import consumer_lag
from streams.metaverse_events import DeleteRequest, ExportAll
from streams.processors.persons import RESYNC_PREFIX
from streams.rules.dn import is_below

log = logging.getLogger(__name__)

_BATCH = 200


@dataclass(slots=True)
class ResyncPlan:
    create: list[ContactState] = field(default_factory=list)
    # A contact that differs, and how.
    correct: list[tuple[ContactState, str]] = field(default_factory=list)
    delete: list[Entry] = field(default_factory=list)
    unchanged: int = 0
    # Anchors on more than one entry: the writer refuses those (a person must mend them).
    errors: list[str] = field(default_factory=list)


def plan_resync(desired: Mapping[str, ContactState], contacts: Iterable[Entry], *, within: str | None = None) -> ResyncPlan:
    """What it takes for the central forest to match the desired states (pure). `within`: only
    contacts that live, or are to live, below this DN (one forest's contacts OU)."""
    found: dict[str, list[Entry]] = {}
    for entry in contacts:
        found.setdefault(entry.anchor or "", []).append(entry)
    plan = ResyncPlan()
    for anchor in sorted(set(desired) | set(found)):
        state, entries = desired.get(anchor), found.get(anchor, [])
        if within is not None and not _concerns(state, entries, within):
            continue
        if len(entries) > 1:
            plan.errors.append(f"anchor {anchor} is on {len(entries)} entries: " + ", ".join(e.dn for e in entries))
        elif state is None or not state.present:
            plan.delete.extend(entries)
        elif not entries:
            plan.create.append(state)
        elif (difference := _difference(state, entries[0])) is not None:
            plan.correct.append((state, difference))
        else:
            plan.unchanged += 1
    return plan


def _concerns(state: ContactState | None, entries: Sequence[Entry], within: str) -> bool:
    places = [e.dn for e in entries] + ([state.container_dn] if state is not None and state.present else [])
    return any(is_below(place, within) for place in places)


def _difference(state: ContactState, entry: Entry) -> str | None:
    names = [dn for dn in (state.dn, state.fallback_dn) if dn]
    if not any(same_name(entry.dn, dn) for dn in names):
        return f"named {entry.dn!r}, wants {state.dn!r}"
    changes = attribute_changes(entry, state)
    return f"differs in {', '.join(sorted(changes))}" if changes else None


@dataclass(slots=True)
class Summary:
    desired: int = 0
    found: int = 0
    unchanged: int = 0
    created: int = 0
    corrected: int = 0
    deletes_requested: int = 0
    held: int = 0
    blocked: int = 0
    errors: int = 0

    def lines(self) -> list[str]:
        return [
            f"read: {self.desired} desired contact states (replay of the compacted contacts topic), "
            f"{self.found} contacts in the central forest; no source directory was read",
            f"unchanged {self.unchanged}, created {self.created}, corrected {self.corrected}, "
            f"delete requests {self.deletes_requested} (held {self.held}), blocked {self.blocked}, errors {self.errors}",
        ]


class Progress:
    """Counts and rate on one line of a terminal; a log line now and then otherwise."""

    def __init__(self, total: int, out: TextIO) -> None:
        self._total, self._out, self._done, self._start = total, out, 0, time.monotonic()
        self._tty = out.isatty()

    def advance(self, count: int) -> None:
        self._done += count
        rate = self._done / max(time.monotonic() - self._start, 1e-6)
        line = f"resync: {self._done}/{self._total} contacts written ({rate:,.0f}/s)"
        if self._tty:
            self._out.write("\r" + line + ("\n" if self._done >= self._total else ""))
            self._out.flush()
        elif self._done >= self._total or self._done % (_BATCH * 10) == 0:
            log.info(line)


def read_desired(topology: Topology, as_of: datetime | None = None) -> tuple[dict[str, ContactState], int]:
    """Each person's latest contact state (as of `as_of`), and how many records could not be decoded."""
    until_ms = int(as_of.timestamp() * 1000) if as_of is not None else None
    values = asyncio.run(latest_values(topology.kafka, topology.kafka.topics.contacts, until_ms=until_ms))
    desired, undecodable = {}, 0
    for value in values.values():
        try:
            state = ContactState.from_bytes(value)
        except EventDecodeError:
            undecodable += 1
            continue
        desired[state.anchor] = state
    return desired, undecodable


def run_resync(
    topology: Topology, *, dry_run: bool, forest: str | None = None, as_of: datetime | None = None,
    rebuild: bool = False, out: TextIO = sys.stdout,
) -> int:
    """`as_of`: the contact states as they were then (with the worker stopped: a running worker
    puts its current states back, as it does after any hand edit). `rebuild`: first have the
    running worker derive every person's contact again with the rules in force."""
    if rebuild and not dry_run:
        asyncio.run(_rebuild(topology, out))
    desired, undecodable = read_desired(topology, as_of)
    attributes = sorted({name for state in desired.values() for name in state.managed_attributes})
    writer = LdapContactWriter(topology.central)
    try:
        contacts = writer.managed_contacts(attributes)
        within = topology.forest(forest).contacts_ou if forest else None
        plan = plan_resync(desired, contacts, within=within)
        summary = Summary(desired=len(desired), found=len(contacts), unchanged=plan.unchanged,
                          errors=len(plan.errors) + undecodable)
        if dry_run:
            _print_plan(plan, out)
        else:
            _write(writer, plan, summary, out)
            _request_deletes(topology, plan.delete, summary)
    finally:
        writer.close()
    for line in plan.errors:
        print(f"error: {line}", file=out)
    read, outcome = summary.lines()
    print(read, file=out)
    if dry_run:
        outcome = (f"dry run, nothing changed: would create {len(plan.create)}, correct {len(plan.correct)}, "
                   f"delete {len(plan.delete)}; unchanged {plan.unchanged}, errors {summary.errors}")
    print(outcome, file=out)
    return 1 if summary.errors else 0


def _print_plan(plan: ResyncPlan, out: TextIO) -> None:
    rows = [("create", s.anchor, s.dn or "") for s in plan.create]
    rows += [("correct", s.anchor, f"{s.dn} ({why})") for s, why in plan.correct]
    rows += [("delete", e.anchor or "", e.dn) for e in plan.delete]
    if not rows:
        print("nothing to change", file=out)
        return
    width = max(len(action) for action, _, _ in rows)
    for action, anchor, what in rows:
        print(f"{action:<{width}}  {anchor}  {what}", file=out)


def _write(writer: LdapContactWriter, plan: ResyncPlan, summary: Summary, out: TextIO) -> None:
    states = plan.create + [state for state, _ in plan.correct]
    progress = Progress(len(states), out)
    created = {state.anchor for state in plan.create}
    for start in range(0, len(states), _BATCH):
        batch = states[start : start + _BATCH]
        for state, result in zip(batch, writer.apply_all(batch)):
            if isinstance(result, Blocked):
                summary.blocked += 1
                log.warning("resync blocked anchor=%s dn=%s blocker=%s", state.anchor, result.dn, result.blocker_dn)
            elif isinstance(result, PermanentError):
                summary.errors += 1
                log.error("resync refused anchor=%s reason=%s", state.anchor, result)
            elif result != "unchanged":
                if state.anchor in created:
                    summary.created += 1
                else:
                    summary.corrected += 1
            else:
                summary.unchanged += 1
        progress.advance(len(batch))


def _request_deletes(topology: Topology, extra: Sequence[Entry], summary: Summary) -> None:
    """Extra contacts go through the running worker's delete breaker; more than its limit at
    once are all held for an operator, like a sweep over the mass-delete guard."""
    if not extra:
        return
    hold = len(extra) > topology.metaverse.delete_breaker.limit
    run = uuid.uuid4().hex[:12]
    now = datetime.now(timezone.utc).isoformat()
    requests = [
        DeleteRequest(person=entry.anchor or "", request_id=f"{RESYNC_PREFIX}{run}", dn=entry.dn, requested_at=now, hold=hold)
        for entry in extra
    ]
    asyncio.run(_send(topology, requests))
    summary.deletes_requested = len(requests)
    summary.held = len(requests) if hold else 0


async def _rebuild(topology: Topology, out: TextIO, timeout: float = 300.0) -> None:
    """Every person partition derives its persons' contacts again (ExportAll); returns once the
    worker and the contact writer have processed everything up to then."""
    from idsync.kafka_clients import producer_for
    from idsync.runtime import contact_writer_group

    topics = engine_settings(topology).topics
    producer = producer_for(topology.kafka)
    await producer.start()
    try:
        request = ExportAll(requested_at=datetime.now(timezone.utc).isoformat()).to_bytes()
        for partition in sorted(await producer.partitions_for(topics.persons)):
            await producer.send(topics.persons, key=b"export-all", value=request, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    watched = [(topology.streams.app_id, topic) for topic in topics.consumed()]
    watched.append((contact_writer_group(topology), topics.contacts))
    deadline = time.monotonic() + timeout
    while True:
        behind = 0
        for group, topic in watched:
            behind += sum((await consumer_lag(topology.kafka, group, topic)).values())
        print(f"rebuild: {behind} records still to process", file=out)
        if behind == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not catch up within {timeout:.0f}s: is it running?")
        await asyncio.sleep(1.0)


async def _send(topology: Topology, requests: Sequence[DeleteRequest]) -> None:
    from idsync.kafka_clients import producer_for

    topic = engine_settings(topology).topics.deletes
    producer = producer_for(topology.kafka)
    await producer.start()
    try:
        for request in requests:
            await producer.send(topic, key=request.person.encode(), value=request.to_bytes(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()
