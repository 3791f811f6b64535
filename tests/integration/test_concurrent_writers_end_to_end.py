"""Writers working on the same objects at once, end to end: every change reaches the metaverse.

Changes commit in another order than they arrive. Should a reader publish a change with a
position older than one published before it for the same object, the metaverse drops it as stale
and the object stays wrong for good; so the metaverse's state of each object must equal the
directory's once everything is processed.
"""

from __future__ import annotations

import asyncio
import threading

import ldap3
import pytest
from aiokafka import AIOKafkaConsumer

from streams.processors.app import CONNECTOR_SPACE_TABLE
from streams.rules.connector_space import SpaceEntry
from streams.rules.metaverse import SourceObject
from tests.integration.gal import FOREST_NAMES, GalDeployment, entries
from tests.integration.test_gal_sync import wait_until_running

pytestmark = pytest.mark.integration

# Each writer owns one attribute of every user and adds members of its own to every group.
WRITER_ATTRIBUTES = ("displayName", "description", "title", "telephoneNumber")
USERS, GROUPS, ROUNDS = 2, 2, 100  # 4 writers x 100 rounds x 4 writes: 1,600 writes


def write_rounds(gal: GalDeployment, forest: str, writer: int, users: list[str], groups: list[str]) -> None:
    attribute = WRITER_ATTRIBUTES[writer]
    with gal.connection(forest) as connection:
        for round_ in range(ROUNDS):
            for user in users:
                connection.modify(user, {attribute: [(ldap3.MODIFY_REPLACE, [f"{writer}.{round_}"])]})
            for group in groups:
                member = f"uid=member.{writer}.{round_},{gal.people(forest)}"
                connection.modify(group, {"member": [(ldap3.MODIFY_ADD, [member])]})


async def metaverse_objects(gal: GalDeployment, forest: str) -> dict[str, SourceObject]:
    """The connector space's living objects of the forest by DN (lower-cased), from its table's changelog."""
    topic = f"{gal.topology.streams.app_id}-{CONNECTOR_SPACE_TABLE}-changelog"
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=gal.broker.bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        latest: dict[bytes, bytes | None] = {}
        while batch := await consumer.getmany(timeout_ms=3000, max_records=5000):
            for records in batch.values():
                for record in records:
                    latest[record.key] = record.value
    finally:
        await consumer.stop()
    objects = [
        SpaceEntry.from_bytes(value).object
        for key, value in latest.items()
        if value is not None and not key.startswith(b"__")  # per-partition bookkeeping, not objects
    ]
    return {o.dn.lower(): o for o in objects if o.forest == FOREST_NAMES[forest] and not o.deleted}


# forest-a is read by the poll reader, forest-b by the push reader (tests/integration/gal.py).
@pytest.mark.parametrize("forest", ["forest_a", "forest_b"])
def test_concurrent_writers_on_the_same_objects_every_change_reaches_the_metaverse(
    gal: GalDeployment, forest: str
) -> None:
    wait_until_running(gal)
    users = [gal.add_user(forest, f"shared.{n}") for n in range(USERS)]
    groups = []
    with gal.connection(forest) as connection:
        for n in range(GROUPS):
            groups.append(f"cn=team.{n},{gal.people(forest)}")
            connection.add(groups[-1], ["top", "groupOfNames"], {"cn": f"team.{n}", "member": [users[0]]})

    writers = [
        threading.Thread(target=write_rounds, args=(gal, forest, writer, users, groups))
        for writer in range(len(WRITER_ATTRIBUTES))
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    in_directory = entries(gal.directories[forest], gal.people(forest), attributes=["*"])
    assert all(len(in_directory[group]["member"]) == 1 + len(writers) * ROUNDS for group in groups)
    gal.wait_until_processed(timeout=60)

    in_metaverse = asyncio.run(metaverse_objects(gal, forest))
    compared = ("member", *(name.lower() for name in WRITER_ATTRIBUTES))
    wrong = {}
    for dn in users + groups:
        found = in_metaverse.get(dn.lower())
        for name in compared:
            expected = set(in_directory[dn].get(name, []))
            held = set(found.attributes.get(name, ())) if found else set()
            if held != expected:
                wrong[f"{dn} {name}"] = {"lost": sorted(expected - held), "stale": sorted(held - expected)}
    assert not wrong, f"the metaverse differs from the directory: {wrong}"
