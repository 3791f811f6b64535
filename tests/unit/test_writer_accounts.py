"""idsync's own writes: recognising the writer accounts, the event flag, and the metaverse never
provisioning what a writer account created."""

from dataclasses import replace

import orjson

from connectors.ldap.scope import WriterAccounts
from streams.events import ChangeOp, DirectoryChange
from streams.rules.metaverse import SourceObject, apply_change
from streams.events import ObjectKind
from streams.kafka.range_reader import Record
from tests.unit.test_engine import Bus, partition_of


def user(object_id: str, position: str = "20261122050000.000000Z", snapshot_id: str | None = None) -> DirectoryChange:
    return DirectoryChange(
        forest="a",
        object_id=object_id,
        op=ChangeOp.ADD,
        kind=ObjectKind.USER,
        dn=f"uid={object_id},dc=a,dc=idsync,dc=test",
        attributes={"displayName": (object_id,), "mail": (f"{object_id}@a.test",)},
        position=position,
        changed_at="2026-11-22T05:00:00Z",
        snapshot_id=snapshot_id,
    )


def feed(bus: Bus, change: DirectoryChange) -> None:
    key = change.key.encode()
    bus.queues[("changes", partition_of(key))].append(Record(key, change.to_bytes(), "changes", partition_of(key), 0))

WRITER = "cn=idsync-writer,ou=Services,dc=central,dc=idsync,dc=test"


def test_an_authz_id_or_a_creators_name_of_a_writer_account_is_recognised_as_a_dn():
    writers = WriterAccounts([WRITER])
    assert writers.wrote([b"dn:cn=idsync-writer,ou=Services,dc=central,dc=idsync,dc=test"])
    assert writers.wrote([b"dn:CN=IDSYNC-WRITER, ou=services,DC=central,dc=idsync,dc=test"])
    assert writers.wrote(("cn=idsync-writer,ou=services,dc=central,dc=idsync,dc=test",))


def test_other_accounts_and_anonymous_missing_or_malformed_values_are_not():
    writers = WriterAccounts([WRITER])
    assert not writers.wrote([b"dn:cn=admin,dc=central,dc=idsync,dc=test"])
    assert not writers.wrote([b"dn:cn=idsync-writer,ou=other,dc=central,dc=idsync,dc=test"])
    assert not writers.wrote([b""]) and not writers.wrote(None) and not writers.wrote([])
    assert not writers.wrote([b"dn:cn=a,,dc=b"])


def test_without_writer_accounts_nothing_is_recognised():
    assert not WriterAccounts([])
    assert not WriterAccounts([]).wrote([b"dn:" + WRITER.encode()])


def test_written_by_idsync_travels_and_is_optional_in_version_1():
    change = replace(user("c1"), written_by_idsync=True)
    encoded = orjson.loads(change.to_bytes())
    assert (encoded["version"], encoded["written_by_idsync"]) == (1, True)
    assert DirectoryChange.from_bytes(change.to_bytes()) == change
    # A v1 event from a build before the field: not written by idsync. Older builds ignore the key.
    del encoded["written_by_idsync"]
    assert DirectoryChange.from_bytes(orjson.dumps(encoded)).written_by_idsync is False


def test_created_by_idsync_is_set_by_a_writer_accounts_add_and_lasts_while_the_object_lives():
    created = apply_change(None, replace(user("u1", position="1"), written_by_idsync=True))
    assert created.created_by_idsync
    restated = apply_change(created, user("u1", position="2"))  # a snapshot: creator unknown
    assert restated.created_by_idsync and SourceObject.from_bytes(restated.to_bytes()).created_by_idsync
    gone = apply_change(restated, replace(user("u1", position="3"), op=ChangeOp.DELETE, attributes={}))
    assert not apply_change(gone, user("u1", position="4")).created_by_idsync  # a new object, by a person
    assert not apply_change(None, user("u1")).created_by_idsync


def test_a_metaverse_entry_stored_before_the_flag_existed_is_not_created_by_idsync():
    stored = orjson.loads(apply_change(None, user("u1")).to_bytes())
    del stored["created_by_idsync"]
    assert not SourceObject.from_bytes(orjson.dumps(stored)).created_by_idsync


async def test_a_user_created_by_a_writer_account_is_never_exported_even_restated_by_a_snapshot():
    bus = Bus(0)
    bus.caught_up("central")
    feed(bus, replace(user("u2"), written_by_idsync=True))
    feed(bus, user("u2", position="20261122050001.000000Z", snapshot_id="s1"))
    feed(bus, replace(user("u2", position="20261122050002.000000Z"), op=ChangeOp.MODIFY, attributes={}))
    await bus.drain()
    assert bus.out["contacts"] == []


async def test_a_person_modified_by_a_writer_account_keeps_its_contact():
    bus = Bus(0)
    bus.caught_up("central")
    feed(bus, user("u4"))
    feed(bus, replace(user("u4", position="20261122050001.000000Z"), op=ChangeOp.MODIFY, attributes={},
                      written_by_idsync=True))
    await bus.drain()
    assert [contact.present for contact in bus.contacts().values()] == [True]
