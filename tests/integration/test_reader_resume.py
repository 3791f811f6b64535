"""Readers resume by themselves: killed (-9) in the middle of a burst, every change of the burst
reaches the changes topic and the sync converges; with their directory stopped and started again,
the SourceRunner carries on without loss."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import ldap3
import pytest
from aiokafka import AIOKafkaConsumer

from idsync.rig.forests import reader_forest
from streams.events import DirectoryChange, decode_change_topic
from tests.integration.gal import FOREST_NAMES, GalDeployment, deploy, entries, eventually
from tests.integration.readers import Directory, SourceUnderTest, kafka_settings, private_slapd, snapshot_done
from tests.integration.test_gal_sync import contact_named, wait_until_running

pytestmark = pytest.mark.integration

USERS, ROUNDS = 20, 100  # 2,000 modifies


def burst(gal: GalDeployment, forest: str, dns: list[str]) -> None:
    with gal.connection(forest) as connection:
        for round_ in range(ROUNDS):
            for dn in dns:
                connection.modify(dn, {"displayName": [(ldap3.MODIFY_REPLACE, [f"round {round_}"])]})


async def published_changes(bootstrap_servers: str, topic: str, forest: str) -> list[DirectoryChange]:
    """The forest's changes on the topic outside snapshots, in each partition's order."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        changes = []
        while batch := await consumer.getmany(timeout_ms=3000, max_records=5000):
            for records in batch.values():
                for record in records:
                    change = decode_change_topic(record.value)
                    if isinstance(change, DirectoryChange) and change.forest == forest and change.snapshot_id is None:
                        changes.append(change)
        return changes
    finally:
        await consumer.stop()


def kill_during_a_burst(gal: GalDeployment, forest: str) -> list[str]:
    """The burst users' DNs, once a burst over them ran while the worker was killed and restarted."""
    wait_until_running(gal)
    dns = [gal.add_user(forest, f"burst{i}") for i in range(USERS)]
    expected_contacts = USERS + (1 if forest == "forest_a" else 0)  # wait_until_running's user is in forest-a
    eventually(lambda: len(gal.contacts(forest)) == expected_contacts, timeout=30, what="burst users' contacts")

    writer = threading.Thread(target=burst, args=(gal, forest, dns))
    writer.start()
    time.sleep(1.0)
    gal.workers[-1].kill()
    writer.join()
    gal.start_worker()

    for dn in dns[:3]:
        uid = dn.split(",")[0].split("=")[1]
        eventually(
            lambda: (contact_named(gal, forest, uid) or {}).get("displayname") == [f"round {ROUNDS - 1}"],
            timeout=60,
            what=f"final displayName of {uid}",
        )
    gal.wait_until_processed(timeout=60)
    stale = {
        dn.split(",")[0]: c["displayname"]
        for dn, c in gal.contacts(forest).items()
        if dn.startswith("cn=burst") and c["displayname"] != [f"round {ROUNDS - 1}"]
    }
    assert not stale, f"contacts not at the final value: {stale}"
    return dns


# forest-a is read by the poll reader, forest-b by the push reader (tests/integration/gal.py).
@pytest.mark.parametrize("forest", ["forest_a", "forest_b"])
def test_kill_during_a_burst_loses_no_change(gal: GalDeployment, forest: str) -> None:
    started = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() - 1))
    kill_during_a_burst(gal, forest)

    log = entries(
        gal.directories[forest],
        "cn=accesslog",
        f"(&(objectClass=auditModify)(reqStart>={started}.000000Z))",
        attributes=["entryCSN", "reqDN"],
    )
    # A change's position is its log record's CSN.
    expected = {attrs["entrycsn"][0] for attrs in log.values() if attrs["reqdn"][0].startswith("uid=burst")}
    assert len(expected) == USERS * ROUNDS
    changes = asyncio.run(published_changes(gal.broker.bootstrap_servers, gal.topology.kafka.topics.changes, FOREST_NAMES[forest]))
    missing = expected - {change.position for change in changes}
    assert not missing, f"{len(missing)} changes never published, e.g. {sorted(missing)[:5]}"


def test_generic_poll_killed_during_a_burst_publishes_every_object_up_to_its_last_state(
    kafka_broker, directories, unique_name: str, tmp_path: Path
) -> None:
    """generic-poll publishes states, not changes: several writes between two polls collapse into
    one state. So "none lost" means: every object's last state is published, and no object's
    states go backwards (a later position never carries an older value), across the kill."""
    gal = deploy(
        tmp_path, unique_name, kafka_broker, directories._asdict(), change_capture={"forest_a": {"mode": "generic-poll"}}
    )
    try:
        dns = kill_during_a_burst(gal, "forest_a")
        changes = asyncio.run(published_changes(gal.broker.bootstrap_servers, gal.topology.kafka.topics.changes, "forest-a"))
    finally:
        gal.stop_workers()
    rounds: dict[str, list[tuple[str, int]]] = {dn: [] for dn in dns}
    for change in changes:
        if change.dn in rounds and change.attributes.get("displayName", ("",))[0].startswith("round "):
            rounds[change.dn].append((change.position, int(change.attributes["displayName"][0].split()[1])))
    for dn, states in rounds.items():
        by_position = [value for _, value in sorted(states)]
        assert by_position == sorted(by_position), f"{dn}: a later state carries an older value: {states}"
        assert by_position and by_position[-1] == ROUNDS - 1, f"{dn}: last state never published: {states}"
    # Several polls ran during the burst, before and after the kill: states, not one final snapshot.
    assert sum(len(states) for states in rounds.values()) > USERS


@pytest.mark.parametrize("mode", ["accesslog-sync", "accesslog-poll", "generic-poll"])
async def test_directory_stopped_and_started_again_the_runner_resumes_by_itself(
    kafka_broker, unique_name: str, tmp_path: Path, mode: str
) -> None:
    with private_slapd(tmp_path) as instance:
        directory = Directory(instance)
        base = f"ou=people,{instance.suffix}"
        forest = reader_forest(instance, base, tmp_path / "password", name="own", mode=mode, poll_interval_seconds=0.05)
        source = SourceUnderTest(forest, kafka_settings(kafka_broker, unique_name))
        async with source.running():
            await source.wait(snapshot_done, what="the first snapshot")
            user = directory.add_user(base, "user")
            object_id = directory.entry_uuid(user)
            await source.wait(lambda p: p.live(object_id), what="the add")
            directory.modify(user, {"description": [(ldap3.MODIFY_REPLACE, ["at the stop"])]})
            instance.stop()
            await asyncio.sleep(1.0)  # the runner meets the outage and retries
            instance.start()
            directory.modify(user, {"description": [(ldap3.MODIFY_REPLACE, ["after the restart"])]})
            published = await source.wait(
                lambda p: "after the restart" in descriptions(p.live(object_id)), what="the change after the restart"
            )

    once = {change.position: change for change in published.live(object_id)}  # downstream drops repeats
    states = descriptions(sorted(once.values(), key=lambda change: change.position))
    made = [None, "at the stop", "after the restart"]
    if mode == "generic-poll":  # latest states: a write overwritten before a poll is never seen
        assert states[-1] == made[-1] and states == [state for state in made if state in states]
    else:
        assert states == made


def descriptions(changes: list[DirectoryChange]) -> list[str | None]:
    """The description each change sets: a value delta (accesslog) or the whole state (generic-poll)."""
    found = []
    for change in changes:
        values = [m.values[0] for m in change.modifications if m.attribute == "description" and m.values]
        found.append((values or list(change.attributes.get("description", ())) or [None])[0])
    return found
