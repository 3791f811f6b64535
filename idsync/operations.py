"""Operator commands: the open conflicts, the deletes the breaker holds, and the verdict on them.

Both lists are compacted topics read whole (streams.kafka.compacted): a conflict whose latest
record is closed, or a held delete whose latest record is a tombstone, is over. A verdict goes to
partition 0 of the engine's delete-requests topic, where the breaker (streams/processors/persons.py
BreakerStage) reads it.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime, timezone
from typing import TypeVar

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.config.metaverse import engine_settings
from streams.config.topology import KafkaSettings, Topology
from streams.events import EventDecodeError
from streams.kafka.clients import client_settings
from streams.kafka.compacted import latest_values
from streams.metaverse_events import Conflict, DeleteRequest, DeleteVerdict

VERDICT_KEY = b"verdict"
REASON_WIDTH = 60
PARTIES_WIDTH = 60
E = TypeVar("E", Conflict, DeleteRequest)


# --- what the topics hold -------------------------------------------------------------------------

def decoded(values: Mapping[bytes | None, bytes], kind: type[E]) -> tuple[list[E], int]:
    """Each latest value decoded as `kind`, and how many were not such an event."""
    events, skipped = [], 0
    for raw in values.values():
        try:
            events.append(kind.from_bytes(raw))
        except EventDecodeError:
            skipped += 1
    return events, skipped


def open_conflicts(values: Mapping[bytes | None, bytes]) -> tuple[list[Conflict], int]:
    """The conflicts whose latest record is open, oldest first."""
    conflicts, skipped = decoded(values, Conflict)
    return sorted((c for c in conflicts if c.open), key=lambda c: (c.at, c.conflict_id)), skipped


def held_deletes(values: Mapping[bytes | None, bytes]) -> tuple[list[DeleteRequest], int]:
    """The held deletes (a decided one is a tombstone, so it is not in `values`), oldest first."""
    requests, skipped = decoded(values, DeleteRequest)
    return sorted(requests, key=lambda r: (r.requested_at, r.person)), skipped


class NotHeld(ValueError):
    def __init__(self, persons: Sequence[str]) -> None:
        super().__init__(f"not held: {', '.join(persons)}")
        self.persons = tuple(persons)


# Persons per verdict record: thousands of held deletes still make records far below Kafka's 1 MB.
VERDICT_PERSONS = 1000


def verdicts(held: Sequence[DeleteRequest], *, approve: bool, persons: Sequence[str]) -> tuple[DeleteVerdict, ...]:
    """The verdict on the named persons' held deletes; none named: on every one in `held`, named one
    by one, so that a delete held after the operator's command read the list (the mass delete still
    going on) waits for a verdict of its own. NotHeld names the persons who have no held delete."""
    held_persons = {request.person for request in held}
    named = tuple(dict.fromkeys(persons or [request.person for request in held]))
    missing = [person for person in named if person not in held_persons]
    if missing:
        raise NotHeld(missing)
    return tuple(DeleteVerdict(approve=approve, persons=named[i:i + VERDICT_PERSONS])
                 for i in range(0, len(named), VERDICT_PERSONS))


def verdict_summary(decisions: Sequence[DeleteVerdict], *, every_held: bool) -> str:
    verb = "approved" if decisions[0].approve else "rejected"
    persons = [person for decision in decisions for person in decision.persons]
    if every_held:
        return f"{verb} all {_count(len(persons), 'held delete')} (a delete held from now on waits for another verdict)"
    return f"{verb} {_count(len(persons), 'held delete')}: {', '.join(persons)}"


# --- output ---------------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Plain columns, two spaces apart, each as wide as its widest cell; the last is not padded."""
    lines = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def shorten(text: str, width: int) -> str:
    """One line of at most `width` characters; a cut is marked with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def moment(iso: str) -> str:
    """An ISO timestamp to the second, in UTC; what does not parse is shown as it is."""
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc)
    return at.strftime("%Y-%m-%d %H:%M:%S") + ("Z" if at.tzinfo is not None else "")


def conflicts_table(conflicts: Sequence[Conflict]) -> str:
    if not conflicts:
        return "no open conflicts"
    rows = [(c.kind, c.conflict_id, moment(c.at), shorten(", ".join(c.parties), PARTIES_WIDTH),
             shorten(c.reason, REASON_WIDTH)) for c in conflicts]
    body = table(("KIND", "CONFLICT ID", "SINCE", "PARTIES", "REASON"), rows)
    return f"{body}\n{_count(len(conflicts), 'open conflict')}"


def held_table(requests: Sequence[DeleteRequest]) -> str:
    if not requests:
        return "no held deletes"
    rows = [(r.person, r.dn or "-", moment(r.requested_at)) for r in requests]
    body = table(("PERSON", "DN", "REQUESTED AT"), rows)
    return f"{body}\n{_count(len(requests), 'held delete')}"


def as_json(events: Sequence[Conflict | DeleteRequest]) -> str:
    """A JSON array of the events' fields (without the schema header)."""
    objects = [{f.name: getattr(event, f.name) for f in fields(event)} for event in events]
    return orjson.dumps(objects, option=orjson.OPT_INDENT_2).decode()


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


# --- the commands ---------------------------------------------------------------------------------

# (cluster, topic) -> each key's latest value; streams.kafka.compacted.latest_values.
Read = Callable[[KafkaSettings, str], Awaitable[Mapping[bytes | None, bytes]]]


async def list_conflicts(topology: Topology, *, json: bool = False, read: Read = latest_values) -> int:
    return await _list(topology, topology.kafka.topics.conflicts, open_conflicts, conflicts_table, "conflicts",
                       json=json, read=read)


async def list_held_deletes(topology: Topology, *, json: bool = False, read: Read = latest_values) -> int:
    return await _list(topology, topology.kafka.topics.held_deletes, held_deletes, held_table, "delete requests",
                       json=json, read=read)


async def _list(topology: Topology, topic: str, select, render, what: str, *, json: bool, read: Read) -> int:
    """The events `select` keeps of a compacted topic's latest values, as a table or JSON."""
    try:
        events, skipped = select(await read(topology.kafka, topic))
    except KafkaError as exc:
        return _unreachable(topology, exc)
    _note_skipped(skipped, topic, what)
    print(as_json(events) if json else render(events))
    return 0


async def decide_held_deletes(
    topology: Topology, *, approve: bool, persons: Sequence[str] = (), read: Read = latest_values
) -> int:
    """Send the verdict on the named persons' held deletes (none named: every one held now) once the
    broker has it on all replicas. A named person with no held delete refuses the whole verdict (2)."""
    kafka = topology.kafka
    try:
        held, _ = held_deletes(await read(kafka, kafka.topics.held_deletes))
        if not held and not persons:
            print(f"no held deletes to {'approve' if approve else 'reject'}")
            return 0
        try:
            decisions = verdicts(held, approve=approve, persons=persons)
        except NotHeld as exc:
            print(f"nothing sent: no held delete for {', '.join(exc.persons)} "
                  f"(`idsync deletes --held` lists the {_count(len(held), 'held delete')})", file=sys.stderr)
            return 2
        await send_verdicts(topology, decisions)
    except KafkaError as exc:
        return _unreachable(topology, exc)
    print(verdict_summary(decisions, every_held=not persons))
    return 0


async def send_verdicts(topology: Topology, decisions: Sequence[DeleteVerdict]) -> None:
    producer = AIOKafkaProducer(**client_settings(topology.kafka), acks="all")
    await producer.start()
    try:
        topic = engine_settings(topology).topics.deletes
        for decision in decisions:
            await producer.send_and_wait(topic, decision.to_bytes(), key=VERDICT_KEY, partition=0)
    finally:
        await producer.stop()


def _note_skipped(skipped: int, topic: str, what: str) -> None:
    if skipped:
        print(f"skipped {_count(skipped, 'record')} on {topic} that are not {what}", file=sys.stderr)


def _unreachable(topology: Topology, exc: KafkaError) -> int:
    print(f"cannot reach Kafka at {topology.kafka.bootstrap_servers}: {exc}", file=sys.stderr)
    return 1
