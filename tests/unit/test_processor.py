"""The metaverse processor's decisions, with the faust table replaced by a dict."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from streams.config.topology import load_topology
from streams.events import ChangeOp, DirectoryChange, Heartbeat, ObjectKind, SnapshotMarker, SnapshotPhase
from streams.kafka.range_reader import Record
from streams.processors.metaverse import MetaverseProcessor

TOPOLOGY = load_topology(Path(__file__).parents[2] / "topology.yaml")


def user(object_id: str, position: str = "20261122050000.000000Z", snapshot_id: str | None = None) -> DirectoryChange:
    return DirectoryChange(
        forest="forest-a",
        object_id=object_id,
        op=ChangeOp.ADD,
        kind=ObjectKind.USER,
        dn=f"uid={object_id},dc=forest-a,dc=idsync,dc=test",
        attributes={"cn": (object_id,), "sn": ("x",), "mail": (f"{object_id}@a.test",)},
        position=position,
        changed_at="2026-11-22T05:00:00Z",
        snapshot_id=snapshot_id,
    )


class Harness:
    """The processor over dicts; `log` plays the changes topic (one list of records per partition)."""

    def __init__(self, topology=TOPOLOGY) -> None:
        self.table: dict[bytes, bytes] = {}
        self.committed: dict[int, int] = {}  # the group's committed offsets; absent: start of the partition
        self.contacts = []
        self.letters = []
        self.log: dict[int, list[Record]] = {0: [], 1: []}

        async def emit(contact):
            self.contacts.append(contact)

        async def dead_letter(record, reason, forest):
            self.letters.append((reason, forest, record.offset))

        async def start_offset(partition):
            return self.committed.get(partition, 0)

        async def read_range(partition, start, stop):
            return [r for r in self.log[partition] if start <= r.offset < stop]

        # Two partitions: keys ending in an even digit live in partition 0.
        self.processor = MetaverseProcessor(
            topology,
            table=self.table,
            emit_contact=emit,
            dead_letter=dead_letter,
            partition_of=lambda key: int(key[-1:]) % 2,
            start_offset=start_offset,
            read_range=read_range,
        )

    def append(self, event, *, key: bytes | None = None, partition: int = 0) -> Record:
        value = event if isinstance(event, bytes) else event.to_bytes()
        if key is None and isinstance(event, DirectoryChange):
            key = event.key.encode()
        record = Record(key, value, "changes", partition, len(self.log[partition]))
        self.log[partition].append(record)
        return record

    def feed(self, event, *, key: bytes | None = None, partition: int = 0) -> None:
        asyncio.run(self.processor.process(self.append(event, key=key, partition=partition)))


def test_user_add_emits_its_contact_once():
    harness = Harness()
    harness.feed(user("u0"))
    harness.feed(user("u0"))  # re-delivered
    (contact,) = harness.contacts
    assert contact.present and contact.dn == "cn=u0,ou=forest-a,ou=gal-contacts,dc=central,dc=idsync,dc=test"
    assert contact.attributes["msRTCSIP-PrimaryUserAddress"] == ("sip:u0@a.test",)


@pytest.mark.parametrize(
    "value, key, reason",
    [
        (b"\x00garbage", b"k", "not JSON"),
        (user("u0").to_bytes(), b"forest-a/other", "does not match"),
    ],
)
def test_bad_records_are_dead_lettered(value, key, reason):
    harness = Harness()
    harness.feed(value, key=key)
    assert reason in harness.letters[0][0] and not harness.table


def test_user_without_a_name_is_dead_lettered_but_kept_in_the_metaverse():
    harness = Harness()
    nameless = replace(user("u0"), attributes={"sn": ("x",)})
    harness.feed(nameless)
    assert "no 'cn' value" in harness.letters[0][0]
    assert harness.table and not harness.contacts


def end_marker(snapshot_id: str, **fields) -> SnapshotMarker:
    return SnapshotMarker(forest="forest-a", snapshot_id=snapshot_id, phase=SnapshotPhase.END, **fields)


def test_end_marker_sweeps_vanished_objects_of_its_own_partition_only():
    harness = Harness()
    for object_id in ("u0", "u2", "u1"):
        harness.feed(user(object_id, "20261122040000.000000Z"))
    harness.feed(user("u0", "20261122050000.000000Z", snapshot_id="s1"))
    harness.contacts.clear()
    harness.feed(end_marker("s1", high_water="20261122050000.000000Z", objects=1), key=b"forest-a/snapshot")
    # u2 (partition 0) vanished; u1 lives in partition 1, whose own marker sweeps it.
    assert [(c.anchor, c.present) for c in harness.contacts] == [("forest-a/u2", False)]
    harness.feed(end_marker("s1", high_water="20261122050000.000000Z", objects=1), key=b"forest-a/snapshot", partition=1)
    assert [(c.anchor, c.present) for c in harness.contacts][-1] == ("forest-a/u1", False)


def test_an_empty_snapshot_sweeps_nothing_unless_allowed():
    harness = Harness()
    harness.feed(user("u0"))
    harness.contacts.clear()
    harness.feed(end_marker("empty", high_water=None), key=b"forest-a/snapshot")
    assert not harness.contacts and not harness.letters
    harness.feed(end_marker("empty", high_water=None, allow_mass_delete=True), key=b"forest-a/snapshot")
    assert [(c.anchor, c.present) for c in harness.contacts] == [("forest-a/u0", False)]


def test_mass_delete_guard_refuses_until_allowed():
    guarded = replace(TOPOLOGY, streams=replace(TOPOLOGY.streams, sweep_max_fraction=0.1, sweep_always_allowed=0))
    harness = Harness(guarded)
    for object_id in ("u0", "u2", "u4"):
        harness.feed(user(object_id))
    harness.contacts.clear()
    later = "20261122060000.000000Z"  # a snapshot, newer than the users, that holds none of them
    harness.feed(end_marker("s9", high_water=later), key=b"forest-a/snapshot")
    assert not harness.contacts and "would delete 3 of 3" in harness.letters[0][0]
    harness.feed(end_marker("s9", high_water=later, allow_mass_delete=True), key=b"forest-a/snapshot")
    assert sorted(c.anchor for c in harness.contacts if not c.present) == ["forest-a/u0", "forest-a/u2", "forest-a/u4"]


def test_records_skipped_before_the_current_one_are_re_read_and_processed_first():
    harness = Harness()
    harness.feed(user("u0"))
    harness.append(user("u2"))  # delivered to nobody, as when faust skips a record
    harness.append(b"garbage")
    harness.feed(user("u4"))
    assert [c.anchor for c in harness.contacts] == ["forest-a/u0", "forest-a/u2", "forest-a/u4"]
    assert harness.letters[0][2] == 2  # the skipped bad record is dead-lettered with its own offset
    assert harness.processor.processed() == {0: 4}


def test_records_skipped_before_the_first_delivered_one_are_re_read_from_the_committed_offset():
    harness = Harness()
    for object_id in ("u0", "u2", "u4"):
        harness.append(user(object_id))
    harness.committed[0] = 1  # u0 was processed by the previous worker
    harness.feed(user("u6"))  # faust delivers from here: u2 and u4 were skipped
    assert [c.anchor for c in harness.contacts] == ["forest-a/u2", "forest-a/u4", "forest-a/u6"]
    assert harness.processor.processed() == {0: 4}


def test_records_before_the_processed_offset_are_dropped():
    harness = Harness()
    harness.feed(user("u0"))
    harness.feed(user("u2"))
    harness.table.clear()  # a re-processed record would add its entry again
    asyncio.run(harness.processor.process(harness.log[0][0]))
    assert not harness.table and harness.processor.processed() == {0: 2} and len(harness.contacts) == 2


def test_a_forgotten_partition_starts_again_at_its_committed_offset():
    harness = Harness()
    harness.feed(user("u0"))
    harness.feed(user("u2"))
    harness.processor.forget([0])
    harness.committed[0] = 1
    harness.table.clear()  # so that every record processed again shows in the contacts
    harness.contacts.clear()
    harness.feed(user("u4"))
    assert [c.anchor for c in harness.contacts] == ["forest-a/u2", "forest-a/u4"]
    assert harness.processor.processed() == {0: 3}


def test_heartbeats_only_reveal_gaps():
    harness = Harness()
    harness.feed(user("u1"), partition=1)
    harness.append(user("u3"), partition=1)
    harness.feed(Heartbeat(sent_at="2026-11-22T05:00:00Z"), key=b"heartbeat", partition=1)
    assert [c.anchor for c in harness.contacts] == ["forest-a/u1", "forest-a/u3"] and not harness.letters


def test_idsync_output_read_back_as_a_user_is_not_provisioned_again():
    harness = Harness()
    echoed = replace(user("u0"), attributes={**user("u0").attributes, "idsyncAnchor": ("forest-a/u8",)})
    harness.feed(echoed)
    assert not harness.contacts and not harness.letters and harness.table
