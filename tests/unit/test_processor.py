"""The metaverse processor's decisions, with the faust table replaced by a dict."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from streams.events import ChangeOp, DirectoryChange, ObjectKind, SnapshotMarker, SnapshotPhase
from streams.processor import MetaverseProcessor
from streams.topology import load_topology

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
    def __init__(self, topology=TOPOLOGY) -> None:
        self.table: dict[bytes, bytes] = {}
        self.contacts = []
        self.letters = []

        async def emit(contact):
            self.contacts.append(contact)

        # Two partitions: keys ending in an even digit live in partition 0.
        self.processor = MetaverseProcessor(
            topology, table=self.table, emit_contact=emit, partition_of=lambda key: int(key[-1:]) % 2
        )

    def feed(self, record, *, key: bytes | None = None, partition: int = 0) -> None:
        async def dead_letter(reason, forest):
            self.letters.append((reason, forest))

        value = record if isinstance(record, bytes) else record.to_bytes()
        if key is None and isinstance(record, DirectoryChange):
            key = record.key.encode()
        asyncio.run(self.processor.process(key, value, partition, dead_letter))


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


def test_mass_delete_guard_refuses_until_allowed():
    guarded = replace(TOPOLOGY, streams=replace(TOPOLOGY.streams, sweep_max_fraction=0.1, sweep_always_allowed=0))
    harness = Harness(guarded)
    for object_id in ("u0", "u2", "u4"):
        harness.feed(user(object_id))
    harness.contacts.clear()
    harness.feed(end_marker("empty", high_water=None), key=b"forest-a/snapshot")
    assert not harness.contacts and "would delete 3 of 3" in harness.letters[0][0]
    harness.feed(end_marker("empty", high_water=None, allow_mass_delete=True), key=b"forest-a/snapshot")
    assert sorted(c.anchor for c in harness.contacts if not c.present) == ["forest-a/u0", "forest-a/u2", "forest-a/u4"]
