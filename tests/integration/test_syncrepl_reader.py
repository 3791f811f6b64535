"""The RFC 4533 push reader against real slapd: what it reads, resuming from its cookie, outages, bursts."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import ldap3
import pytest
from ldap3.strategy.asynchronous import AsyncStrategy

from connectors.ldap_syncrepl import AccesslogSyncReader
from idsync.rig import SlapdInstance
from idsync.rig.forests import reader_forest
from idsync.sample_data import ensure_ou
from streams.contracts import ReadBatch, RetriableError
from streams.events import ChangeOp, DirectoryChange, Modification, ModOp, ObjectKind
from streams.topology import Forest
from tests.conftest import Directories

pytestmark = pytest.mark.integration

PERSON = ["top", "person", "organizationalPerson", "inetOrgPerson"]
# Short, so that "nothing more arrives" costs little; production uses the 1 s default.
IDLE_SECONDS = 0.3


def forest_config(instance: SlapdInstance, base_dn: str, password_file: Path) -> Forest:
    return reader_forest(instance, base_dn, password_file, name=instance.name.replace("_", "-"), mode="accesslog-sync")


class Directory:
    """Writes to one slapd as its admin, raising on any failure."""

    def __init__(self, instance: SlapdInstance) -> None:
        self.instance = instance

    def add_user(self, parent: str, uid: str, **attributes: str) -> str:
        dn = f"uid={uid},{parent}"
        with self.instance.admin_connection(raise_exceptions=True) as connection:
            connection.add(dn, PERSON, {"cn": uid, "sn": uid, "mail": f"{uid}@idsync.test"} | attributes)
        return dn

    def add_group(self, parent: str, cn: str, members: list[str]) -> str:
        dn = f"cn={cn},{parent}"
        with self.instance.admin_connection(raise_exceptions=True) as connection:
            connection.add(dn, ["top", "groupOfNames"], {"cn": cn, "member": members})
        return dn

    def modify(self, dn: str, changes: dict) -> None:
        with self.instance.admin_connection(raise_exceptions=True) as connection:
            connection.modify(dn, changes)

    def move(self, dn: str, new_rdn: str, new_parent: str | None = None) -> None:
        with self.instance.admin_connection(raise_exceptions=True) as connection:
            connection.modify_dn(dn, new_rdn, delete_old_dn=True, new_superior=new_parent)

    def delete(self, dn: str) -> None:
        with self.instance.admin_connection(raise_exceptions=True) as connection:
            connection.delete(dn)

    def entry_uuid(self, dn: str) -> str:
        with self.instance.admin_connection(raise_exceptions=True) as connection:
            connection.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["entryUUID"])
            return connection.response[0]["raw_attributes"]["entryUUID"][0].decode()


def receiver_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, AsyncStrategy.ReceiverSocketThread)]


async def read_changes(
    reader: AccesslogSyncReader, position: str, count: int, *, timeout: float = 10
) -> tuple[list[DirectoryChange], str]:
    """At least `count` changes, read the way the source runner does: position to position."""
    changes: list[DirectoryChange] = []
    deadline = time.monotonic() + timeout
    while len(changes) < count:
        assert time.monotonic() < deadline, f"{len(changes)} of {count} changes within {timeout}s: {changes}"
        batch = await reader.read(position)
        assert not batch.rejected and not batch.is_snapshot
        changes.extend(batch.changes)
        position = batch.position
    return changes, position


async def assert_quiet(reader: AccesslogSyncReader, position: str) -> None:
    batch = await reader.read(position)
    assert batch.changes == () and batch.position == position


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
    directory = Directory(directories.forest_a)
    outside = f"ou={unique_name}-outside,{directories.forest_a.suffix}"
    early = directory.add_user(base, "early")
    carol = directory.add_user(outside, "carol", displayName="Carol")

    snapshot = await reader.read(None)
    assert snapshot.is_snapshot and not snapshot.rejected
    assert {change.dn for change in snapshot.changes} == {base, early}
    assert all(change.op is ChangeOp.ADD for change in snapshot.changes)
    position = snapshot.position

    alice = directory.add_user(base, "alice")
    directory.modify(alice, {"displayName": [(ldap3.MODIFY_REPLACE, ["Alice A"])]})
    bob = directory.add_user(base, "bob")
    staff = directory.add_group(base, "staff", [alice])
    directory.modify(staff, {"member": [(ldap3.MODIFY_ADD, [bob])]})
    directory.modify(staff, {"member": [(ldap3.MODIFY_DELETE, [alice])]})
    directory.move(alice, "uid=alice.renamed")
    renamed = f"uid=alice.renamed,{base}"
    sub = f"ou=sub,{base}"
    with directories.forest_a.admin_connection(raise_exceptions=True) as connection:
        ensure_ou(connection, sub)
    directory.move(bob, "uid=bob", sub)
    moved_bob = f"uid=bob,{sub}"
    directory.move(moved_bob, "uid=bob", outside)
    directory.move(carol, "uid=carol", base)
    moved_carol = f"uid=carol,{base}"
    directory.delete(renamed)
    uuid = {dn: directory.entry_uuid(dn) for dn in (staff, moved_carol)}

    changes, position = await read_changes(reader, position, 12)
    await assert_quiet(reader, position)

    summary = [(c.op, c.dn) for c in changes]
    assert summary == [
        (ChangeOp.ADD, alice),
        (ChangeOp.MODIFY, alice),
        (ChangeOp.ADD, bob),
        (ChangeOp.ADD, staff),
        (ChangeOp.MODIFY, staff),
        (ChangeOp.MODIFY, staff),
        (ChangeOp.MOVE, renamed),
        (ChangeOp.ADD, sub),
        (ChangeOp.MOVE, moved_bob),
        (ChangeOp.DELETE, moved_bob),  # moved out of base_dn
        (ChangeOp.ADD, moved_carol),  # moved into base_dn
        (ChangeOp.DELETE, renamed),
    ]
    add_alice, modify_alice, add_bob, add_staff, add_member, remove_member, rename, _, move, out, into, delete = changes
    assert add_alice.kind is ObjectKind.USER and add_alice.attributes["mail"] == ("alice@idsync.test",)
    assert modify_alice.modifications == (Modification(attribute="displayName", op=ModOp.REPLACE, values=("Alice A",)),)
    assert add_staff.kind is ObjectKind.GROUP and add_staff.attributes["member"] == (alice,)
    assert add_member.modifications == (Modification(attribute="member", op=ModOp.ADD, values=(bob,)),)
    assert remove_member.modifications == (Modification(attribute="member", op=ModOp.DELETE, values=(alice,)),)
    assert add_staff.object_id == add_member.object_id == remove_member.object_id == uuid[staff]
    assert rename.old_dn == alice and set(rename.modifications) == {
        Modification(attribute="uid", op=ModOp.ADD, values=("alice.renamed",)),
        Modification(attribute="uid", op=ModOp.DELETE, values=("alice",)),
    }
    assert move.old_dn == bob and move.object_id == add_bob.object_id
    assert out.object_id == add_bob.object_id and out.old_dn is None
    # Its history before it entered the scope was not ours: the whole entry is read.
    assert into.object_id == uuid[moved_carol] and into.attributes["displayName"] == ("Carol",)
    assert delete.object_id == add_alice.object_id == rename.object_id
    # Positions are reqStart: unique and in the order the changes happened.
    positions = [c.position for c in changes]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    # Every event names its kind, though the accesslog states it only on adds.
    user, group, other = ObjectKind.USER, ObjectKind.GROUP, ObjectKind.OTHER
    assert [c.kind for c in changes] == [user, user, user, group, group, group, user, other, user, user, user, user]


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
    # A slapd of its own: stopping the shared forests would disturb whatever else holds them.
    instance = SlapdInstance(
        tmp_path / "slapd", name="outage", suffix="dc=outage,dc=idsync,dc=test", admin_password=secrets.token_urlsafe(16)
    ).start()
    directory = Directory(instance)
    base = f"ou=people,{instance.suffix}"
    reader = AccesslogSyncReader(forest_config(instance, base, tmp_path / "password"), idle_seconds=IDLE_SECONDS)
    try:
        outside = f"ou=elsewhere,{instance.suffix}"
        with instance.admin_connection(raise_exceptions=True) as connection:
            ensure_ou(connection, base)
            ensure_ou(connection, outside)
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
        instance.stop()
    assert receiver_threads() == []


async def read_until_failure(reader: AccesslogSyncReader, position: str) -> None:
    """Reads whatever the stream still holds until the lost connection surfaces; nothing may
    advance the position past what was returned."""
    while True:
        batch: ReadBatch = await reader.read(position)
        assert batch.position == position or batch.changes
        position = batch.position


async def read_like_the_runner(
    reader: AccesslogSyncReader, position: str, count: int, *, timeout: float = 10
) -> tuple[list[DirectoryChange], str]:
    """As the source runner: a RetriableError means wait a little and read from the same position."""
    changes: list[DirectoryChange] = []
    deadline = time.monotonic() + timeout
    while len(changes) < count:
        assert time.monotonic() < deadline, f"{len(changes)} of {count} changes within {timeout}s"
        try:
            batch = await reader.read(position)
        except RetriableError:
            await asyncio.sleep(0.1)
            continue
        changes.extend(batch.changes)
        position = batch.position
    return changes, position


async def test_burst_of_2000_modifies_from_concurrent_writers_each_seen_once(
    reader: AccesslogSyncReader, directories: Directories, base: str
) -> None:
    directory = Directory(directories.forest_a)
    writers, per_writer = 4, 500
    users = [directory.add_user(base, f"burst.{n}") for n in range(writers)]
    position = (await reader.read(None)).position
    failures: list[BaseException] = []

    def write(user: str) -> None:
        try:
            with directories.forest_a.admin_connection(raise_exceptions=True) as connection:
                for n in range(per_writer):
                    connection.modify(user, {"description": [(ldap3.MODIFY_REPLACE, [str(n)])]})
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    try:
        changes, position = await read_changes(reader, position, writers * per_writer, timeout=30)
    finally:
        for thread in threads:
            thread.join()
    assert not failures
    await assert_quiet(reader, position)

    assert len(changes) == writers * per_writer
    assert len({c.position for c in changes}) == len(changes)  # none twice
    values = {user: [] for user in users}
    for change in changes:
        assert change.op is ChangeOp.MODIFY
        (modification,) = change.modifications
        values[change.dn].append(int(modification.values[0]))
    # Each object's changes in the order they were made.
    assert all(seen == list(range(per_writer)) for seen in values.values()), Counter(map(len, values.values()))
