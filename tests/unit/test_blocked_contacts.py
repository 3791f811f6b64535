"""Blocked contact states: retried with backoff, the latest state per contact, holding back
their partition's commit (streams/processors/blocked.py)."""

from __future__ import annotations

from dataclasses import dataclass

from streams.contracts import Blocked
from streams.events import ContactState
from streams.processors.blocked import BlockedContacts

BLOCKED = Blocked(reason="held", dn="cn=Ada,ou=c,dc=x", blocker_dn="cn=Ada,ou=c,dc=x")


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(anchor: str) -> ContactState:
    return ContactState(anchor=anchor, present=True, container_dn="ou=c,dc=x", dn="cn=Ada,ou=c,dc=x")


def test_retried_after_the_first_delay_then_twice_as_long_each_time_up_to_the_cap() -> None:
    clock = Clock()
    blocked = BlockedContacts(first_delay=5, max_delay=60, clock=clock)
    record = Record("contacts", 0, 7)
    delays = []
    entry = blocked.block(record, state("p1"), BLOCKED)
    for _ in range(6):
        delays.append(entry.delay)
        assert blocked.due() == []
        clock.now += entry.delay
        assert [e.state.anchor for e in blocked.due()] == ["p1"]
        entry = blocked.block(record, state("p1"), BLOCKED)  # the retry was blocked again
    assert delays == [5, 10, 20, 40, 60, 60]


def test_a_newer_state_replaces_the_blocked_one_and_starts_the_backoff_again() -> None:
    clock = Clock()
    blocked = BlockedContacts(first_delay=5, max_delay=60, clock=clock)
    blocked.block(Record("contacts", 0, 7), state("p1"), BLOCKED)
    blocked.block(Record("contacts", 0, 7), state("p1"), BLOCKED)
    newer = ContactState(anchor="p1", present=False, container_dn="")
    entry = blocked.block(Record("contacts", 0, 12), newer, BLOCKED)
    assert entry.delay == 5 and len(blocked) == 1
    clock.now += 5
    assert [e.state for e in blocked.due()] == [newer]
    assert blocked.floor(Record("contacts", 0, 0)) == 12


def test_floor_is_the_oldest_blocked_record_of_each_partition() -> None:
    blocked = BlockedContacts(clock=Clock())
    blocked.block(Record("contacts", 0, 30), state("p1"), BLOCKED)
    blocked.block(Record("contacts", 0, 10), state("p2"), BLOCKED)
    blocked.block(Record("contacts", 1, 5), state("p3"), BLOCKED)
    assert blocked.floor(Record("contacts", 0, 0)) == 10
    assert blocked.floor(Record("contacts", 1, 0)) == 5
    assert blocked.floor(Record("contacts", 2, 0)) is None
    blocked.release("p2")
    assert blocked.floor(Record("contacts", 0, 0)) == 30
    assert "p2" not in blocked and blocked.release("p2") is None


def test_contacts_of_partitions_no_longer_assigned_are_forgotten() -> None:
    blocked = BlockedContacts(clock=Clock())
    blocked.block(Record("contacts", 0, 30), state("p1"), BLOCKED)
    blocked.block(Record("contacts", 1, 5), state("p2"), BLOCKED)
    gone = blocked.keep_partitions([Record("contacts", 0, 0)])
    assert [e.state.anchor for e in gone] == ["p2"]
    assert "p1" in blocked and "p2" not in blocked
