"""The generic-poll reader against real slapd: latest state by polling, deletes by reconcile, resume, outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import ldap3
import pytest

from connectors.ldap.generic_poll import MODIFY_TIMESTAMP, GenericPollReader
from idsync.rig import SlapdInstance
from idsync.rig.forests import reader_forest
from idsync.sample_data import ensure_ou
from streams.config.forests import Forest
from streams.contracts import ReadBatch, RetriableError
from streams.events import ChangeOp, DirectoryChange
from tests.conftest import Directories
from tests.integration.gal import deploy, eventually
from tests.integration.readers import (
    Directory,
    SourceUnderTest,
    hostile_entries_are_published_or_dead_lettered,
    kafka_settings,
    past_snapshot,
    private_slapd,
    read_past_the_outage,
    restorable_backup,
    restore,
)

pytestmark = pytest.mark.integration

# Long enough that no reconcile interrupts a test that is not about reconciling.
NO_RECONCILE = 600.0


def forest_config(instance: SlapdInstance, base_dn: str, password_file: Path, *, reconcile: float) -> Forest:
    return reader_forest(
        instance,
        base_dn,
        password_file,
        name=instance.name.replace("_", "-"),
        mode="generic-poll",
        poll_interval_seconds=0.05,
        reconcile_interval_seconds=reconcile,
    )


async def poll_until(reader: GenericPollReader, position: str, dns: set[str], *, timeout: float = 5) -> tuple[list[DirectoryChange], str]:
    """Polls (never a snapshot) until changes for every DN in `dns` arrived, as the runner would."""
    changes: list[DirectoryChange] = []
    deadline = time.monotonic() + timeout
    while not dns <= {change.dn for change in changes}:
        assert time.monotonic() < deadline, f"changes for {dns} within {timeout}s; got {changes}"
        try:
            batch = await reader.read(position)
        except RetriableError:
            await asyncio.sleep(0.1)
            continue
        assert not batch.is_snapshot and not batch.rejected
        changes.extend(batch.changes)
        position = batch.position
    return changes, position


async def assert_quiet(reader: GenericPollReader, position: str) -> None:
    """Several polls over the overlap window publish nothing and keep the position."""
    for _ in range(3):
        batch = await reader.read(position)
        assert (batch.changes, batch.position, batch.is_snapshot) == ((), position, False)


@pytest.fixture
async def reader(directories: Directories, base: str, tmp_path: Path) -> AsyncIterator[GenericPollReader]:
    reader = GenericPollReader(forest_config(directories.forest_a, base, tmp_path / "password", reconcile=NO_RECONCILE))
    try:
        yield reader
    finally:
        await reader.close()


async def test_adds_modifies_renames_and_moves_arrive_as_latest_state(
    reader: GenericPollReader, directories: Directories, base: str, unique_name: str
) -> None:
    directory = Directory(directories.forest_a)
    outside = f"ou={unique_name}-outside,{directories.forest_a.suffix}"
    early = directory.add_user(base, "early")
    carol = directory.add_user(outside, "carol", displayName="Carol")

    snapshot = await reader.read(None)
    assert snapshot.is_snapshot and not snapshot.rejected
    assert {change.dn for change in snapshot.changes} == {base, early}
    position = await past_snapshot(reader, snapshot)
    await assert_quiet(reader, position)

    alice = directory.add_user(base, "alice")
    directory.modify(alice, {"displayName": [(ldap3.MODIFY_REPLACE, ["Alice A"])]})
    changes, position = await poll_until(reader, position, {alice})
    (added,) = changes  # the add and the modify collapse into the entry's latest state
    assert added.op is ChangeOp.ADD and added.attributes["displayName"] == ("Alice A",)
    assert "entryCSN" not in added.attributes and added.position > snapshot.changes[0].position
    await assert_quiet(reader, position)

    directory.move(alice, "uid=alice.renamed")
    renamed = f"uid=alice.renamed,{base}"
    sub = f"ou=sub,{base}"
    with directories.forest_a.admin_connection(raise_exceptions=True) as connection:
        ensure_ou(connection, sub)
    directory.move(early, "uid=early", sub)
    directory.move(carol, "uid=carol", base)
    moved, into = f"uid=early,{sub}", f"uid=carol,{base}"
    changes, position = await poll_until(reader, position, {renamed, sub, moved, into})
    by_dn = {change.dn: change for change in changes}
    assert len(changes) == 4 and all(change.op is ChangeOp.ADD for change in changes)
    assert by_dn[renamed].object_id == added.object_id and by_dn[renamed].position > added.position
    assert by_dn[renamed].attributes["displayName"] == ("Alice A",)
    assert by_dn[moved].object_id == directory.entry_uuid(moved)
    assert by_dn[into].attributes["displayName"] == ("Carol",)
    await assert_quiet(reader, position)


async def test_members_added_and_removed_arrive_as_the_groups_latest_member_list(
    reader: GenericPollReader, directories: Directories, base: str
) -> None:
    directory = Directory(directories.forest_a)
    alice, bob = directory.add_user(base, "alice"), directory.add_user(base, "bob")
    staff = directory.add_group(base, "staff", [alice])
    position = await past_snapshot(reader, await reader.read(None))

    directory.modify(staff, {"member": [(ldap3.MODIFY_ADD, [bob])]})
    (added,), position = await poll_until(reader, position, {staff})
    assert added.op is ChangeOp.ADD and set(added.attributes["member"]) == {alice, bob}
    directory.modify(staff, {"member": [(ldap3.MODIFY_DELETE, [alice])]})
    (removed,), position = await poll_until(reader, position, {staff})
    assert removed.attributes["member"] == (bob,) and removed.position > added.position
    await assert_quiet(reader, position)


async def test_a_delete_is_not_polled_but_the_next_reconcile_lacks_the_object(
    directories: Directories, base: str, tmp_path: Path
) -> None:
    directory = Directory(directories.forest_a)
    reader = GenericPollReader(forest_config(directories.forest_a, base, tmp_path / "password", reconcile=2.0))
    try:
        position = await past_snapshot(reader, await reader.read(None))
        doomed = directory.add_user(base, "doomed")
        (added,), position = await poll_until(reader, position, {doomed})

        directory.delete(doomed)
        started = time.monotonic()
        batch: ReadBatch = await reader.read(position)
        while not batch.is_snapshot:
            assert batch.changes == () and batch.position == position, "a poll cannot see a delete"
            assert time.monotonic() - started < 5, "no reconcile within 5 s of a 2 s interval"
            batch = await reader.read(position)
        assert base in {change.dn for change in batch.changes}
        assert added.object_id not in {change.object_id for change in batch.changes}
        # One position for the whole reconcile, older than what is polled after it.
        assert len({change.position for change in batch.changes}) == 1
        position = await past_snapshot(reader, batch)
        after = directory.add_user(base, "after.reconcile")
        (polled,), _ = await poll_until(reader, position, {after})
        assert polled.position > batch.changes[0].position
    finally:
        await reader.close()


async def test_resume_from_a_returned_position_sees_what_changed_while_closed(
    directories: Directories, base: str, tmp_path: Path
) -> None:
    directory = Directory(directories.forest_a)
    config = forest_config(directories.forest_a, base, tmp_path / "password", reconcile=NO_RECONCILE)
    first = GenericPollReader(config)
    try:
        position = await past_snapshot(first, await first.read(None))
        seen = directory.add_user(base, "seen")
        (before,), position = await poll_until(first, position, {seen})
    finally:
        await first.close()

    missed = directory.add_user(base, "missed.while.closed")
    directory.modify(seen, {"displayName": [(ldap3.MODIFY_REPLACE, ["Seen Again"])]})
    second = GenericPollReader(config)
    try:
        changes, position = await poll_until(second, position, {missed, seen})
        by_dn = {change.dn: change for change in changes}
        assert by_dn[seen].attributes["displayName"] == ("Seen Again",)
        assert by_dn[seen].position > before.position
        await assert_quiet(second, position)
    finally:
        await second.close()


async def test_slapd_stopped_raises_retriable_then_resumes(tmp_path: Path) -> None:
    with private_slapd(tmp_path) as instance:
        await _outage_then_resume(instance, tmp_path)


async def _outage_then_resume(instance: SlapdInstance, tmp_path: Path) -> None:
    directory = Directory(instance)
    base = f"ou=people,{instance.suffix}"
    reader = GenericPollReader(forest_config(instance, base, tmp_path / "password", reconcile=NO_RECONCILE))
    try:
        position = await past_snapshot(reader, await reader.read(None))
        unread = directory.add_user(base, "unread.before.stop")

        instance.stop()
        started = time.monotonic()
        with pytest.raises(RetriableError):
            await reader.read(position)
        assert time.monotonic() - started < 5  # noticed promptly, not at a timeout
        with pytest.raises(RetriableError):  # reconnecting while the server is down
            await reader.read(position)

        instance.start()
        after = directory.add_user(base, "after.restart")
        changes, position = await poll_until(reader, position, {unread, after})
        assert len(changes) == 2
        await assert_quiet(reader, position)
    finally:
        await reader.close()


async def test_without_entrycsn_two_writes_within_one_second_are_both_seen(
    reader: GenericPollReader, directories: Directories, base: str
) -> None:
    reader._stamp_attribute = MODIFY_TIMESTAMP  # as on a server that keeps no entryCSN
    directory = Directory(directories.forest_a)
    position = await past_snapshot(reader, await reader.read(None))
    alice = directory.add_user(base, "alice")
    (added,), position = await poll_until(reader, position, {alice})
    directory.modify(alice, {"displayName": [(ldap3.MODIFY_REPLACE, ["Alice A"])]})
    # Most likely within the second of the add: same modifyTimestamp, new content.
    changes, position = await poll_until(reader, position, {alice})
    (modified,) = changes
    assert modified.attributes["displayName"] == ("Alice A",) and modified.position > added.position
    assert "modifyTimestamp" not in modified.attributes
    await assert_quiet(reader, position)


def test_gal_with_a_generic_poll_forest_adds_contacts_and_deletes_them_by_reconcile(
    kafka_broker, directories: Directories, unique_name: str, tmp_path: Path
) -> None:
    gal = deploy(
        tmp_path,
        unique_name,
        kafka_broker,
        directories._asdict(),
        change_capture={"forest_a": {"mode": "generic-poll", "reconcile_interval_seconds": 2.0}},
    )
    try:
        gal.start_worker()
        dn = gal.add_user("forest_a", "polled.user", displayName="Polled User")
        contact_dn = f"cn=polled.user,{gal.contacts_ou('forest_a')}"
        contact = eventually(lambda: gal.contacts("forest_a").get(contact_dn), timeout=60, what="contact created")
        assert contact["displayname"] == ["Polled User"]

        gal.delete("forest_a", dn)
        # Polling cannot see the delete: it takes a reconcile (2 s here) and the sweep after it.
        eventually(lambda: contact_dn not in gal.contacts("forest_a"), timeout=15, what="contact deleted")
    finally:
        gal.stop_workers()


@pytest.mark.parametrize("backup_while_running", [True, False], ids=["live-backup", "offline-backup"])
async def test_a_directory_restored_from_a_backup_is_put_right_by_a_later_reconcile(
    tmp_path: Path, backup_while_running: bool
) -> None:
    """Polls cannot see what a restore undid (the restored entries carry their old stamps), and
    the watermark stays where it was, so nothing published goes backwards; the first reconcile
    dated after the undone writes has the restored state, and the metaverse sweeps what it lacks."""
    with private_slapd(tmp_path) as instance:
        directory = Directory(instance)
        base = f"ou=people,{instance.suffix}"
        kept = directory.add_user(base, "kept")
        reader = GenericPollReader(forest_config(instance, base, tmp_path / "password", reconcile=2.0))
        try:
            position = await past_snapshot(reader, await reader.read(None))
            backup = restorable_backup(instance, tmp_path / "backup", while_running=backup_while_running)
            undone = directory.add_user(base, "added.after.the.backup")
            directory.modify(kept, {"description": [(ldap3.MODIFY_REPLACE, ["after the backup"])]})
            polled, position = await poll_until(reader, position, {undone, kept})
            restore(instance, backup)

            newest = max(change.position for change in polled)
            batch = await read_past_the_outage(reader, position, timeout=15)
            while not (batch.is_snapshot and batch.changes[0].position > newest):
                batch = await read_past_the_outage(reader, batch.position, timeout=15)
        finally:
            await reader.close()
    assert {change.dn for change in batch.changes} == {base, kept}
    (kept_now,) = [change for change in batch.changes if change.dn == kept]
    assert "description" not in kept_now.attributes


async def test_hostile_entries_are_published_or_dead_lettered(
    kafka_broker, directories: Directories, base: str, unique_name: str, tmp_path: Path
) -> None:
    forest = forest_config(directories.forest_a, base, tmp_path / "password", reconcile=NO_RECONCILE)
    source = SourceUnderTest(forest, kafka_settings(kafka_broker, unique_name))
    await hostile_entries_are_published_or_dead_lettered(source, Directory(directories.forest_a), base)
