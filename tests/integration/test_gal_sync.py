"""GAL sync end to end through the real parts: slapd forests -> Kafka -> faust -> slapd central."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.integration.gal import GalDeployment, entries, eventually

pytestmark = pytest.mark.integration

SYNC_DEADLINE = 5.0  # the promise: a change shows in the central forest within 5 s


def contact_named(gal: GalDeployment, forest: str, cn: str) -> dict[str, list[str]] | None:
    return gal.contacts(forest).get(f"cn={cn},{gal.contacts_ou(forest)}")


def wait_until_running(gal: GalDeployment) -> None:
    """The worker is up once a user that existed before it started has its contact (snapshot)."""
    gal.add_user("forest_a", "before.start", displayName="Before Start")
    gal.start_worker()
    eventually(lambda: contact_named(gal, "forest_a", "before.start"), timeout=60, what="first contact")


@pytest.mark.parametrize("forest", ["forest_a", "forest_b"])
def test_user_lifecycle_drives_contact_lifecycle(gal: GalDeployment, forest: str) -> None:
    wait_until_running(gal)

    dn = gal.add_user(forest, "jane.doe", displayName="Jane Doe", mail="jane@corp.test")
    contact = eventually(
        lambda: contact_named(gal, forest, "jane.doe"), timeout=SYNC_DEADLINE, what="contact created"
    )
    assert contact["displayname"] == ["Jane Doe"]
    assert contact["mail"] == ["jane@corp.test"]
    assert contact["targetaddress"] == ["SMTP:jane@corp.test"]
    assert contact["msrtcsip-primaryuseraddress"] == ["sip:jane@corp.test"]
    assert contact["msrtcsip-userenabled"] == ["TRUE"]
    assert set(contact["objectclass"]) >= {"contact", "organizationalPerson", "person"}

    gal.modify(forest, dn, displayName="Jane Q. Doe")
    eventually(
        lambda: (contact_named(gal, forest, "jane.doe") or {}).get("displayname") == ["Jane Q. Doe"],
        timeout=SYNC_DEADLINE,
        what="displayName updated",
    )

    gal.delete(forest, dn)
    eventually(
        lambda: contact_named(gal, forest, "jane.doe") is None, timeout=SYNC_DEADLINE, what="contact deleted"
    )
    # The other forest's OU was never touched by this forest's user.
    other = "forest_b" if forest == "forest_a" else "forest_a"
    assert "jane.doe" not in str(gal.contacts(other))


def test_restart_and_kill_recover_metaverse_without_duplicates(gal: GalDeployment) -> None:
    wait_until_running(gal)
    alice = gal.add_user("forest_a", "alice", displayName="Alice", mail="alice@corp.test")
    bob = gal.add_user("forest_b", "bob", displayName="Bob", mail="bob@corp.test")
    eventually(lambda: len(gal.contacts()) == 3, timeout=SYNC_DEADLINE, what="three contacts")

    gal.stop_workers()
    # Changed while no worker runs: the event carries displayName only, so the contact can only
    # keep its mail if the metaverse state was recovered from Kafka on restart.
    gal.modify("forest_a", alice, displayName="Alice Restarted")
    gal.start_worker()
    contact = eventually(
        lambda: (c := contact_named(gal, "forest_a", "alice")) and c["displayname"] == ["Alice Restarted"] and c,
        timeout=60,
        what="update after restart",
    )
    assert contact["mail"] == ["alice@corp.test"] and contact["targetaddress"] == ["SMTP:alice@corp.test"]

    gal.workers[-1].kill()  # kill -9: no clean shutdown, no final commit
    gal.modify("forest_b", bob, displayName="Bob Killed")
    gal.delete("forest_a", alice)
    gal.start_worker()
    eventually(
        lambda: (c := contact_named(gal, "forest_b", "bob")) and c["displayname"] == ["Bob Killed"],
        timeout=60,
        what="update after kill -9",
    )
    eventually(lambda: contact_named(gal, "forest_a", "alice") is None, timeout=SYNC_DEADLINE, what="delete")
    gal.wait_until_processed()
    contacts = gal.contacts()
    assert sorted(dn.split(",")[1] for dn in contacts) == ["ou=forest-a", "ou=forest-b"]
    assert contact_named(gal, "forest_b", "bob")["mail"] == ["bob@corp.test"]


def test_replaying_every_event_changes_nothing(gal: GalDeployment) -> None:
    wait_until_running(gal)
    for index in range(5):
        gal.add_user("forest_a" if index % 2 else "forest_b", f"user{index}", displayName=f"User {index}")
    eventually(lambda: len(gal.contacts()) == 6, timeout=SYNC_DEADLINE, what="six contacts")
    gal.wait_until_processed()
    before = entries(gal.directories["central"], gal.central_base)

    gal.stop_workers()
    topics = gal.topology.kafka.topics
    republished = asyncio.run(republish_topic(gal.broker.bootstrap_servers, topics.changes))
    # Rewind the sink too, so every contact state is written a second time.
    asyncio.run(
        rewind_group(gal.broker.bootstrap_servers, f"{gal.topology.streams.app_id}-contact-writer", topics.contacts)
    )
    gal.start_worker()
    gal.wait_until_processed(timeout=60)

    assert republished >= 6
    after = entries(gal.directories["central"], gal.central_base)
    # Same entries, and not one written again: entryCSN changes with every write.
    assert after == before


def test_bad_input_is_dead_lettered_and_the_stream_keeps_flowing(gal: GalDeployment) -> None:
    wait_until_running(gal)
    topics = gal.topology.kafka.topics
    asyncio.run(produce(gal.broker.bootstrap_servers, topics.changes, b"forest-a/garbage", b"{not json"))
    gal.add_user("forest_a", "big.user", description="x" * 1_000_000)
    hostile = 'Evil, Inc. + "Co" <x>; #1 \\ y (*)=\u00e9'
    gal.add_user("forest_b", "hostile", cn=hostile, displayName=hostile)
    gal.add_user("forest_a", "photo.user", jpegPhoto=b"\xff\xd8\xff\x00")
    gal.add_user("forest_a", "after.bad")

    eventually(lambda: contact_named(gal, "forest_a", "after.bad"), timeout=SYNC_DEADLINE, what="later user synced")
    eventually(lambda: contact_named(gal, "forest_a", "photo.user"), timeout=SYNC_DEADLINE, what="binary value user")
    hostile_contacts = [c for c in gal.contacts("forest_b").values() if c.get("displayname") == [hostile]]
    assert len(hostile_contacts) == 1 and hostile_contacts[0]["cn"] == [hostile]
    assert contact_named(gal, "forest_a", "big.user") is None

    letters = asyncio.run(read_all(gal.broker.bootstrap_servers, topics.errors, at_least=2))
    by_stage = {headers["idsync.errors.stage"]: (headers, value) for headers, value in letters}
    headers, value = by_stage["metaverse"]
    assert value == b"{not json" and "not JSON" in headers["idsync.errors.reason"]
    assert headers["idsync.errors.topic"] == topics.changes and "idsync.errors.offset" in headers
    headers, _ = by_stage["reader"]
    assert headers["idsync.errors.forest"] == "forest-a"
    assert "over the" in headers["idsync.errors.reason"] and "big.user" in headers["idsync.errors.reason"]


async def produce(bootstrap_servers: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


async def read_all(bootstrap_servers: str, topic: str, *, at_least: int, timeout: float = 10) -> list:
    """(headers as str dict, value) of every record, waiting for at least `at_least` of them."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < at_least and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += [({k: v.decode() for k, v in r.headers}, r.value) for r in batch]
        return records
    finally:
        await consumer.stop()


async def republish_topic(bootstrap_servers: str, topic: str) -> int:
    """Produce every record of `topic` again, as a replaying operator or a confused reader would."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await consumer.start()
    await producer.start()
    try:
        records = []
        while batch := await consumer.getmany(timeout_ms=2000):
            records += [r for rs in batch.values() for r in rs]
        for record in records:
            await producer.send(topic, key=record.key, value=record.value)
        await producer.flush()
        return len(records)
    finally:
        await producer.stop()
        await consumer.stop()


async def rewind_group(bootstrap_servers: str, group_id: str, topic: str) -> None:
    """Commit offset 0 for every partition, joining the (idle) group to be allowed to."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=500)
        await consumer.commit({tp: 0 for tp in consumer.assignment()})
    finally:
        await consumer.stop()


def test_renames_and_moves_follow_the_same_contact(gal: GalDeployment) -> None:
    wait_until_running(gal)
    dn = gal.add_user("forest_a", "carol", displayName="Carol")
    first = eventually(lambda: contact_named(gal, "forest_a", "carol"), timeout=SYNC_DEADLINE, what="contact")

    gal.modify("forest_a", dn, cn="Carol Renamed")  # the contact is named after cn
    renamed = eventually(
        lambda: contact_named(gal, "forest_a", "Carol Renamed"), timeout=SYNC_DEADLINE, what="contact renamed"
    )
    assert renamed["idsyncanchor"] == first["idsyncanchor"] and renamed["entryuuid"] == first["entryuuid"]
    assert contact_named(gal, "forest_a", "carol") is None

    staff = f"ou=staff,{gal.people('forest_a')}"
    with gal.connection("forest_a") as connection:
        connection.add(staff, ["top", "organizationalUnit"])
        connection.modify_dn(dn, "uid=carol2", new_superior=staff)  # rename and move inside scope
    gal.modify("forest_a", f"uid=carol2,{staff}", displayName="Carol Moved")
    eventually(
        lambda: (contact_named(gal, "forest_a", "Carol Renamed") or {}).get("displayname") == ["Carol Moved"],
        timeout=SYNC_DEADLINE,
        what="moved user still updates its contact",
    )

    outside = f"ou=elsewhere-{gal.name},{gal.directories['forest_a'].suffix}"
    with gal.connection("forest_a") as connection:
        connection.add(outside, ["top", "organizationalUnit"])
        connection.modify_dn(f"uid=carol2,{staff}", "uid=carol2", new_superior=outside)  # leaves scope
    eventually(lambda: not gal.contacts("forest_a").get(f"cn=Carol Renamed,{gal.contacts_ou('forest_a')}"), timeout=SYNC_DEADLINE, what="contact removed when the user leaves scope")
    with gal.connection("forest_a") as connection:
        connection.modify_dn(f"uid=carol2,{outside}", "uid=carol2", new_superior=staff)  # comes back
    back = eventually(
        lambda: contact_named(gal, "forest_a", "Carol Renamed"), timeout=SYNC_DEADLINE, what="contact back in scope"
    )
    assert back["displayname"] == ["Carol Moved"] and back["mail"] == ["carol@forest_a.test"]
    assert len(gal.contacts("forest_a")) == 2  # before.start and carol: no duplicate
