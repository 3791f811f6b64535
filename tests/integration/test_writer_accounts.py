"""idsync's own writes are recognisable: against real slapd, changes made by a forest's writer
account are flagged (the accesslog's reqAuthzID; creatorsName for objects read whole), others are
not; end to end, the contact the writer creates in the central forest comes back flagged."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import ldap3
import pytest
from aiokafka import AIOKafkaConsumer

from idsync.rig.forests import reader_forest
from streams.events import ChangeOp, DirectoryChange, decode_change_topic
from tests.conftest import Directories
from tests.integration.gal import GalDeployment
from tests.integration.test_gal_sync import wait_until_running
from tests.integration.test_reader_scope import READERS, read_until
from tests.integration.test_syncrepl_reader import Directory

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", sorted(READERS))
@pytest.mark.parametrize("writer_is_admin", [True, False])
async def test_changes_by_a_writer_account_are_flagged(
    directories: Directories, base: str, tmp_path: Path, mode: str, writer_is_admin: bool
) -> None:
    instance = directories.forest_a
    writer = instance.admin_dn if writer_is_admin else f"cn=idsync-writer,{instance.suffix}"
    forest = reader_forest(instance, base, tmp_path / "password", name="forest-a", mode=mode,
                           poll_interval_seconds=0.05, reconcile_interval_seconds=600.0)
    forest = dataclasses.replace(forest, change_capture=dataclasses.replace(forest.change_capture,
                                                                            writer_accounts=(writer,)))
    directory = Directory(instance)
    early = directory.add_user(base, "early")
    reader = READERS[mode](forest)
    try:
        snapshot = await reader.read(None)
        assert {change.dn: change.written_by_idsync for change in snapshot.changes}[early] is writer_is_admin
        position = snapshot.position

        late = directory.add_user(base, "late")
        directory.modify(early, {"mail": [(ldap3.MODIFY_REPLACE, ["early@new.test"])]})
        changes, _ = await read_until(reader, position, lambda seen: {early, late} <= {c.dn for c in seen})
        flags = {(change.dn, change.op): change.written_by_idsync for change in changes}
        assert flags[(late, ChangeOp.ADD)] is writer_is_admin
        # generic-poll publishes early whole again: its creator, the admin, is the writer or not.
        assert flags[(early, ChangeOp.ADD if mode == "generic-poll" else ChangeOp.MODIFY)] is writer_is_admin
    finally:
        await reader.close()


async def changes_until(bootstrap_servers: str, topic: str, wanted, *, timeout: float = 30) -> list[DirectoryChange]:
    """Every directory change on the topic from the start, until `wanted(changes)` holds."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        changes: list[DirectoryChange] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while not wanted(changes):
            assert asyncio.get_running_loop().time() < deadline, f"not on the topic within {timeout}s: {changes}"
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                decoded = (decode_change_topic(record.value) for record in batch)
                changes += [event for event in decoded if isinstance(event, DirectoryChange)]
        return changes
    finally:
        await consumer.stop()


def test_the_contact_the_writer_creates_comes_back_flagged_as_idsyncs_own(gal: GalDeployment) -> None:
    wait_until_running(gal)
    person = gal.add_user("forest_a", "wanda.writer", displayName="Wanda")
    contact = f"cn=wanda.writer,{gal.contacts_ou('forest_a')}"

    def seen(changes: list[DirectoryChange]) -> bool:
        return {contact.lower(), person.lower()} <= {c.dn.lower() for c in changes if c.op is ChangeOp.ADD}

    changes = asyncio.run(changes_until(gal.broker.bootstrap_servers, gal.topology.kafka.topics.changes, seen))
    adds = {(c.forest, c.dn.lower()): c for c in changes if c.op is ChangeOp.ADD}
    assert adds[("central", contact.lower())].written_by_idsync  # the central forest's bind_dn wrote it
    assert not adds[("forest-a", person.lower())].written_by_idsync  # forest-a names no writer account
