"""A reader killed (-9) in the middle of a burst resumes exactly where it stopped: every change
of the burst reaches the changes topic, and the sync converges."""

from __future__ import annotations

import asyncio
import threading
import time

import ldap3
import pytest
from aiokafka import AIOKafkaConsumer

from streams.events import DirectoryChange, decode_change_topic
from tests.integration.gal import FOREST_NAMES, GalDeployment, entries, eventually
from tests.integration.test_gal_sync import contact_named, wait_until_running

pytestmark = pytest.mark.integration

USERS, ROUNDS = 20, 100  # 2,000 modifies


def burst(gal: GalDeployment, forest: str, dns: list[str]) -> None:
    with gal.connection(forest) as connection:
        for round_ in range(ROUNDS):
            for dn in dns:
                connection.modify(dn, {"displayName": [(ldap3.MODIFY_REPLACE, [f"round {round_}"])]})


async def published_positions(bootstrap_servers: str, topic: str, forest: str) -> set[str]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        positions = set()
        while batch := await consumer.getmany(timeout_ms=3000, max_records=5000):
            for records in batch.values():
                for record in records:
                    change = decode_change_topic(record.value)
                    if isinstance(change, DirectoryChange) and change.forest == forest and change.snapshot_id is None:
                        positions.add(change.position)
        return positions
    finally:
        await consumer.stop()


# forest-a is read by the poll reader, forest-b by the push reader (tests/integration/gal.py).
@pytest.mark.parametrize("forest", ["forest_a", "forest_b"])
def test_kill_during_a_burst_loses_no_change(gal: GalDeployment, forest: str) -> None:
    wait_until_running(gal)
    dns = [gal.add_user(forest, f"burst{i}") for i in range(USERS)]
    expected_contacts = USERS + (1 if forest == "forest_a" else 0)  # wait_until_running's user is in forest-a
    eventually(lambda: len(gal.contacts(forest)) == expected_contacts, timeout=30, what="burst users' contacts")
    started = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() - 1))

    writer = threading.Thread(target=burst, args=(gal, forest, dns))
    writer.start()
    time.sleep(1.0)
    gal.workers[-1].kill()
    writer.join()
    gal.start_worker()

    log = entries(
        gal.directories[forest],
        "cn=accesslog",
        f"(&(objectClass=auditModify)(reqStart>={started}.000000Z))",
        attributes=["reqStart", "reqDN"],
    )
    expected = {attrs["reqstart"][0] for attrs in log.values() if attrs["reqdn"][0].startswith("uid=burst")}
    assert len(expected) == USERS * ROUNDS

    for dn in dns[:3]:
        uid = dn.split(",")[0].split("=")[1]
        eventually(
            lambda: (contact_named(gal, forest, uid) or {}).get("displayname") == [f"round {ROUNDS - 1}"],
            timeout=60,
            what=f"final displayName of {uid}",
        )
    gal.wait_until_processed(timeout=60)
    published = asyncio.run(published_positions(gal.broker.bootstrap_servers, gal.topology.kafka.topics.changes, FOREST_NAMES[forest]))
    missing = expected - published
    assert not missing, f"{len(missing)} changes never published, e.g. {sorted(missing)[:5]}"
    stale = {
        dn.split(",")[0]: c["displayname"]
        for dn, c in gal.contacts(forest).items()
        if dn.startswith("cn=burst") and c["displayname"] != [f"round {ROUNDS - 1}"]
    }
    assert not stale, f"contacts not at the final value: {stale}"
