"""The accesslog polling reader against real slapd: each change once and in order, concurrent
writers, resuming, outages, a restored directory, hostile entries."""

from __future__ import annotations

import asyncio

from collections.abc import AsyncIterator
from pathlib import Path

import ldap3
import pytest

from connectors.openldap.accesslog_poll import AccesslogPollReader
from idsync.rig import KafkaBroker, SlapdInstance
from idsync.rig.forests import reader_forest
from streams.config.forests import Forest
from streams.contracts import RetriableError
from streams.events import ChangeOp, DirectoryChange
from tests.conftest import Directories
from tests.integration.gal import entries
from tests.integration.readers import (
    Directory,
    SourceUnderTest,
    assert_quiet,
    burst_from_concurrent_writers_each_change_once,
    every_kind_of_change_once_in_order,
    has_dns,
    hostile_entries_are_published_or_dead_lettered,
    kafka_settings,
    past_snapshot,
    private_slapd,
    read_changes,
    read_like_the_runner,
    read_until,
    read_past_the_outage,
    restorable_backup,
    restore,
)

pytestmark = pytest.mark.integration


def forest_config(instance: SlapdInstance, base_dn: str, password_file: Path) -> Forest:
    return reader_forest(
        instance, base_dn, password_file, name=instance.name.replace("_", "-"), mode="accesslog-poll", poll_interval_seconds=0.05
    )


def after(position: str, changes: list[DirectoryChange]) -> list[tuple[ChangeOp, str]]:
    """The changes read from `position`: each made after it, each once."""
    assert all(change.position > position for change in changes), "a change at or before the position read again"
    assert len({change.position for change in changes}) == len(changes), "a change read twice"
    return [(change.op, change.dn) for change in changes]


@pytest.fixture
async def reader(directories: Directories, base: str, tmp_path: Path) -> AsyncIterator[AccesslogPollReader]:
    reader = AccesslogPollReader(forest_config(directories.forest_a, base, tmp_path / "password"))
    try:
        yield reader
    finally:
        await reader.close()


async def test_snapshot_then_every_kind_of_change_once_in_order(
    reader: AccesslogPollReader, directories: Directories, base: str, unique_name: str
) -> None:
    outside = f"ou={unique_name}-outside,{directories.forest_a.suffix}"
    await every_kind_of_change_once_in_order(reader, Directory(directories.forest_a), base, outside)


async def test_burst_of_2000_modifies_from_concurrent_writers_each_seen_once(
    reader: AccesslogPollReader, directories: Directories, base: str
) -> None:
    await burst_from_concurrent_writers_each_change_once(reader, directories.forest_a, base)


async def test_a_new_reader_resumes_from_a_returned_position(directories: Directories, base: str, tmp_path: Path) -> None:
    directory = Directory(directories.forest_a)
    forest = forest_config(directories.forest_a, base, tmp_path / "password")
    first = AccesslogPollReader(forest)
    try:
        position = await past_snapshot(first, await first.read(None))
        seen = directory.add_user(base, "seen")
        changes, position = await read_changes(first, position, 1)
        assert [c.dn for c in changes] == [seen]
    finally:
        await first.close()

    missed = [directory.add_user(base, f"while.closed.{n}") for n in range(3)]
    directory.modify(seen, {"description": [(ldap3.MODIFY_REPLACE, ["changed while closed"])]})
    second = AccesslogPollReader(forest)
    try:
        changes, resumed = await read_until(second, position, has_dns(*missed, seen), timeout=10)
        await assert_quiet(second, resumed)
    finally:
        await second.close()
    assert after(position, changes) == [(ChangeOp.ADD, dn) for dn in missed] + [(ChangeOp.MODIFY, seen)]


async def test_a_backlog_is_read_a_bounded_span_at_a_time_and_an_idle_gap_is_crossed(
    directories: Directories, base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("connectors.openldap.accesslog_poll._SPAN_RECORDS", 40)
    monkeypatch.setattr("connectors.openldap.accesslog_poll._FIRST_SPAN_SECONDS", 0.05)
    directory = Directory(directories.forest_a)
    forest = forest_config(directories.forest_a, base, tmp_path / "password")
    reader = AccesslogPollReader(forest)
    try:
        position = await past_snapshot(reader, await reader.read(None))
        await asyncio.sleep(1.5)  # an idle gap many first spans long, crossed within one poll
        user = directory.add_user(base, "spans")
        with directory.connection() as connection:
            for n in range(400):
                connection.modify(user, {"description": [(ldap3.MODIFY_REPLACE, [f"v{n}"])]})
        batches = []
        while sum(len(batch) for batch in batches) < 401:
            batch = await reader.read(position)
            batches.append(batch.changes)
            position = batch.position
    finally:
        await reader.close()
    changes = [change for batch in batches for change in batch]
    assert [c.op for c in changes] == [ChangeOp.ADD] + [ChangeOp.MODIFY] * 400
    assert [c.modifications[0].values[0] for c in changes[1:]] == [f"v{n}" for n in range(400)]
    assert max(len(batch) for batch in batches) <= 40, "a read held more than _SPAN_RECORDS records"


async def test_slapd_stopped_raises_retriable_then_resumes_without_loss(tmp_path: Path) -> None:
    with private_slapd(tmp_path) as instance:
        directory = Directory(instance)
        base = f"ou=people,{instance.suffix}"
        reader = AccesslogPollReader(forest_config(instance, base, tmp_path / "password"))
        try:
            position = await past_snapshot(reader, await reader.read(None))
            unread = directory.add_user(base, "unread.before.stop")
            instance.stop()
            with pytest.raises(RetriableError):
                await reader.read(position)
            with pytest.raises(RetriableError):  # reconnecting while the server is down
                await reader.read(position)

            instance.start()
            written = [directory.add_user(base, f"after.restart.{n}") for n in range(2)]
            changes, resumed = await read_until(reader, position, has_dns(unread, *written))
            await assert_quiet(reader, resumed)
        finally:
            await reader.close()
    assert after(position, changes) == [(ChangeOp.ADD, dn) for dn in (unread, *written)]


# Older than anything the log still holds, as after a week-long outage with logpurge 7 days:
# a CSN, or a reqStart as idsync stored positions before they were CSNs.
@pytest.mark.parametrize("purged", ["20000101000000.123456Z#000000#000#000000", "20000101000000.123456Z"])
async def test_a_position_the_log_no_longer_holds_starts_over_with_a_snapshot(
    reader: AccesslogPollReader, directories: Directories, base: str, purged: str
) -> None:
    directory = Directory(directories.forest_a)
    user = directory.add_user(base, "survivor")

    batch = await reader.read(purged)
    assert batch.is_snapshot and {c.dn for c in batch.changes} == {base, user}

    position = await past_snapshot(reader, batch)
    later = directory.add_user(base, "after.snapshot")
    changes, _ = await read_changes(reader, position, 1)
    assert [c.dn for c in changes] == [later]


@pytest.mark.parametrize(
    ("backup_while_running", "write_before_the_reader_returns"),
    [(True, False), (False, False), (True, True)],
    ids=["live-backup", "offline-backup", "live-backup-then-a-write"],
)
async def test_a_directory_restored_from_a_backup_starts_over_with_a_snapshot(
    tmp_path: Path, backup_while_running: bool, write_before_the_reader_returns: bool
) -> None:
    # A write after the restore gets a CSN newer than the position and would be read as if
    # nothing happened; what the restore undid would stay published.
    with private_slapd(tmp_path) as instance:
        directory = Directory(instance)
        base = f"ou=people,{instance.suffix}"
        kept = directory.add_user(base, "kept")
        reader = AccesslogPollReader(forest_config(instance, base, tmp_path / "password"))
        try:
            position = await past_snapshot(reader, await reader.read(None))
            backup = restorable_backup(instance, tmp_path / "backup", while_running=backup_while_running)
            undone = directory.add_user(base, "added.after.the.backup")
            directory.modify(kept, {"description": [(ldap3.MODIFY_REPLACE, ["after the backup"])]})
            _, position = await read_like_the_runner(reader, position, 2)

            restore(instance, backup)
            written = [directory.add_user(base, "after.restore")] if write_before_the_reader_returns else []
            batch = await read_past_the_outage(reader, position)

            assert batch.is_snapshot
            assert {change.dn for change in batch.changes} == {base, kept, *written}
            assert undone not in {change.dn for change in batch.changes}
            (kept_now,) = [change for change in batch.changes if change.dn == kept]
            assert "description" not in kept_now.attributes
            position = await past_snapshot(reader, batch)
            later = directory.add_user(base, "after.snapshot")
            changes, _ = await read_changes(reader, position, 1)
            assert [change.dn for change in changes] == [later]
        finally:
            await reader.close()


async def test_a_position_stored_before_positions_were_csns_reads_the_overlap_window_again(
    reader: AccesslogPollReader, directories: Directories, base: str
) -> None:
    """An older idsync stored the reqStart of the last record it read, and still owed the records
    that committed late in the overlap window before it: those are read again, with what follows."""
    directory = Directory(directories.forest_a)
    last_read = directory.add_user(base, "last.read.by.the.older.idsync")
    log = entries(directories.forest_a, "cn=accesslog", f"(&(reqDN={last_read})(reqType=add))", ["reqStart"])
    (stored,) = log.values()
    later = [directory.add_user(base, f"after.the.upgrade.{n}") for n in range(2)]

    first = await reader.read(stored["reqstart"][0])
    assert not first.is_snapshot
    more, resumed = await read_until(reader, first.position, lambda seen: has_dns(*later)([*first.changes, *seen]))
    changes = [*first.changes, *more]
    assert "#" in resumed
    # The record at the stored position is in the window; downstream applies it again, in order.
    assert [(c.op, c.dn) for c in changes][-3:] == [(ChangeOp.ADD, dn) for dn in (last_read, *later)]
    assert len({c.position for c in changes}) == len(changes)
    await assert_quiet(reader, resumed)


async def test_hostile_entries_are_published_or_dead_lettered(
    kafka_broker: KafkaBroker, directories: Directories, base: str, unique_name: str, tmp_path: Path
) -> None:
    forest = forest_config(directories.forest_a, base, tmp_path / "password")
    source = SourceUnderTest(forest, kafka_settings(kafka_broker, unique_name))
    await hostile_entries_are_published_or_dead_lettered(source, Directory(directories.forest_a), base)
