"""The RFC 4533 push reader against real slapd: what it reads, resuming from its cookie, outages, bursts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import ldap3
import pytest

from connectors.openldap.syncrepl import AccesslogSyncReader
from idsync.rig import KafkaBroker, SlapdInstance
from idsync.rig.forests import reader_forest
from streams.config.forests import Forest
from streams.contracts import ReadBatch, RetriableError
from streams.events import ChangeOp, ObjectKind
from tests.conftest import Directories
from tests.integration.readers import (
    Directory,
    SourceUnderTest,
    assert_quiet,
    burst_from_concurrent_writers_each_change_once,
    every_kind_of_change_once_in_order,
    hostile_entries_are_published_or_dead_lettered,
    kafka_settings,
    private_slapd,
    read_changes,
    read_like_the_runner,
    read_past_the_outage,
    restorable_backup,
    restore,
)

pytestmark = pytest.mark.integration

# Short, so that "nothing more arrives" costs little; production uses the 1 s default.
IDLE_SECONDS = 0.3


def forest_config(instance: SlapdInstance, base_dn: str, password_file: Path) -> Forest:
    return reader_forest(instance, base_dn, password_file, name=instance.name.replace("_", "-"), mode="accesslog-sync")


def receiver_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("persistent-search-")]


@pytest.fixture
async def reader(directories: Directories, base: str, tmp_path: Path) -> AsyncIterator[AccesslogSyncReader]:
    reader = AccesslogSyncReader(forest_config(directories.forest_a, base, tmp_path / "password"), idle_seconds=IDLE_SECONDS)
    try:
        yield reader
    finally:
        await reader.close()


async def test_snapshot_then_every_kind_of_change_once_in_order(
    reader: AccesslogSyncReader, directories: Directories, base: str, unique_name: str
) -> None:
    outside = f"ou={unique_name}-outside,{directories.forest_a.suffix}"
    await every_kind_of_change_once_in_order(reader, Directory(directories.forest_a), base, outside)


async def test_resume_from_a_cookie_yields_exactly_what_changed_while_closed(
    directories: Directories, base: str, tmp_path: Path
) -> None:
    directory = Directory(directories.forest_a)
    forest = forest_config(directories.forest_a, base, tmp_path / "password")
    threads_before = receiver_threads()

    first = AccesslogSyncReader(forest, idle_seconds=IDLE_SECONDS)
    position = (await first.read(None)).position
    before = directory.add_user(base, "before.close")
    changes, position = await read_changes(first, position, 1)
    assert [c.dn for c in changes] == [before]
    await first.close()
    assert receiver_threads() == threads_before  # close() left no thread behind

    during = [directory.add_user(base, f"while.closed.{n}") for n in range(3)]
    directory.modify(before, {"description": [(ldap3.MODIFY_REPLACE, ["changed while closed"])]})

    second = AccesslogSyncReader(forest, idle_seconds=IDLE_SECONDS)
    try:
        changes, position = await read_changes(second, position, 4)
        await assert_quiet(second, position)
    finally:
        await second.close()
    assert [(c.op, c.dn) for c in changes] == [(ChangeOp.ADD, dn) for dn in during] + [(ChangeOp.MODIFY, before)]
    assert changes[-1].kind is ObjectKind.USER  # a new reader looks up what it never saw added


async def test_a_stale_cookie_starts_over_with_a_snapshot(
    reader: AccesslogSyncReader, directories: Directories, base: str
) -> None:
    directory = Directory(directories.forest_a)
    user = directory.add_user(base, "survivor")

    # Older than anything the log still holds, as after a week-long outage with logpurge 7 days.
    batch = await reader.read("rid=000,csn=20000101000000.000000Z#000000#000#000000")
    assert batch.is_snapshot and {c.dn for c in batch.changes} == {base, user}

    later = directory.add_user(base, "after.snapshot")
    changes, _ = await read_changes(reader, batch.position, 1)
    assert [c.dn for c in changes] == [later]


async def test_slapd_stopped_raises_retriable_then_resumes_without_loss(tmp_path: Path) -> None:
    with private_slapd(tmp_path) as instance:
        await _outage_then_resume(instance, tmp_path)
    assert receiver_threads() == []


async def _outage_then_resume(instance: SlapdInstance, tmp_path: Path) -> None:
    directory = Directory(instance)
    base, outside = f"ou=people,{instance.suffix}", f"ou=elsewhere,{instance.suffix}"
    reader = AccesslogSyncReader(forest_config(instance, base, tmp_path / "password"), idle_seconds=IDLE_SECONDS)
    try:
        newcomer = directory.add_user(outside, "newcomer", displayName="Newcomer")
        position = (await reader.read(None)).position
        seen = directory.add_user(base, "seen")
        changes, position = await read_changes(reader, position, 1)
        assert [c.dn for c in changes] == [seen]

        unread = directory.add_user(base, "unread.before.stop")
        # Decoding a move into scope reads the entry: with the server gone, that fails after
        # the record left the stream, and must not lose it.
        directory.move(newcomer, "uid=newcomer", base)
        await asyncio.sleep(0.1)  # pushed to the reader, not yet returned
        instance.stop()
        started = time.monotonic()
        with pytest.raises(RetriableError):
            await read_until_failure(reader, position)
        assert time.monotonic() - started < 5  # noticed promptly, not at a timeout
        with pytest.raises(RetriableError):  # reconnecting while the server is down
            await reader.read(position)

        instance.start()
        after = [directory.add_user(base, f"after.restart.{n}") for n in range(2)]
        changes, position = await read_like_the_runner(reader, position, 4)
        await assert_quiet(reader, position)
        moved_in = f"uid=newcomer,{base}"
        assert [(c.op, c.dn) for c in changes] == [(ChangeOp.ADD, dn) for dn in (unread, moved_in, *after)]
        assert changes[1].attributes["displayName"] == ("Newcomer",)
    finally:
        await reader.close()


async def read_until_failure(reader: AccesslogSyncReader, position: str) -> None:
    """Reads whatever the stream still holds until the lost connection surfaces; nothing may
    advance the position past what was returned."""
    while True:
        batch: ReadBatch = await reader.read(position)
        assert batch.position == position or batch.changes
        position = batch.position


async def test_burst_of_2000_modifies_from_concurrent_writers_each_seen_once(
    reader: AccesslogSyncReader, directories: Directories, base: str
) -> None:
    await burst_from_concurrent_writers_each_change_once(reader, directories.forest_a, base)


@pytest.mark.parametrize(
    ("backup_while_running", "write_before_the_reader_returns", "noticed_by"),
    [
        (True, False, "went on without the reader's position"),
        (False, False, "directory older than the cookie"),
        (False, True, "went on without the reader's position"),
    ],
    ids=["live-backup", "offline-backup", "offline-backup-then-a-write"],
)
async def test_a_directory_restored_from_a_backup_starts_over_with_a_snapshot(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    backup_while_running: bool,
    write_before_the_reader_returns: bool,
    noticed_by: str,
) -> None:
    # slapd itself answers 53 (unwillingToPerform) only to the offline backup, as long as nothing
    # was written since the restore; otherwise it would resume the cookie as if nothing happened,
    # and the reader notices that the log lacks the record its cookie names.
    with private_slapd(tmp_path) as instance:
        directory = Directory(instance)
        base = f"ou=people,{instance.suffix}"
        kept = directory.add_user(base, "kept")
        reader = AccesslogSyncReader(forest_config(instance, base, tmp_path / "password"), idle_seconds=IDLE_SECONDS)
        try:
            position = (await reader.read(None)).position
            backup = restorable_backup(instance, tmp_path / "backup", while_running=backup_while_running)
            undone = directory.add_user(base, "added.after.the.backup")
            directory.modify(kept, {"description": [(ldap3.MODIFY_REPLACE, ["after the backup"])]})
            _, position = await read_like_the_runner(reader, position, 2)

            restore(instance, backup)
            written = [directory.add_user(base, "after.restore")] if write_before_the_reader_returns else []
            batch = await read_past_the_outage(reader, position)

            assert batch.is_snapshot
            assert noticed_by in caplog.text
            assert {change.dn for change in batch.changes} == {base, kept, *written}
            assert undone not in {change.dn for change in batch.changes}
            (kept_now,) = [change for change in batch.changes if change.dn == kept]
            assert "description" not in kept_now.attributes
            # As the runner does, the sync starts right after the snapshot: after a restore from
            # a live backup the snapshot's cookie names no record (slapd made its contextCSN anew),
            # and a write before the sync starts would cost one more, needless, snapshot.
            await assert_quiet(reader, batch.position)
            later = directory.add_user(base, "after.snapshot")
            changes, _ = await read_changes(reader, batch.position, 1)
            assert [change.dn for change in changes] == [later]
        finally:
            await reader.close()


async def test_hostile_entries_are_published_or_dead_lettered(
    kafka_broker: KafkaBroker, directories: Directories, base: str, unique_name: str, tmp_path: Path
) -> None:
    forest = forest_config(directories.forest_a, base, tmp_path / "password")
    source = SourceUnderTest(forest, kafka_settings(kafka_broker, unique_name))
    await hostile_entries_are_published_or_dead_lettered(source, Directory(directories.forest_a), base)
