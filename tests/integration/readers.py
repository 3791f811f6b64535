"""What the OpenLDAP reader tests share: writing to a slapd, reading like the source runner, a
slapd of a test's own, a SourceRunner publishing to real topics, and the scenarios every mode
must pass (each kind of change once and in order; hostile entries)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ldap3
import pytest
from aiokafka import AIOKafkaConsumer
from ldap3.utils.dn import escape_rdn

from idsync.rig import KafkaBroker, SlapdInstance
from idsync.kafka_clients import producer_for
from idsync.runtime import make_reader
from idsync.sample_data import ensure_ou
from streams.config.forests import Forest
from streams.config.topology import KafkaSettings, Topics
from streams.contracts import ChangeReader, ReadBatch, RetriableError
from streams.events import ChangeOp, DirectoryChange, Modification, ModOp, ObjectKind, SnapshotMarker, SnapshotPhase, decode_change_topic
from streams.kafka.positions import PositionStore
from streams.kafka.topics import ensure_topics
from streams.processors.source_runner import SourceRunner

PERSON = ["top", "person", "organizationalPerson", "inetOrgPerson"]


class Directory:
    """Writes to one slapd as its admin, raising on any failure."""

    def __init__(self, instance: SlapdInstance) -> None:
        self.instance = instance

    def connection(self) -> contextlib.AbstractContextManager[ldap3.Connection]:
        # auto_encode off: values go out as given, so a test can send what ldap3 would refuse.
        return self.instance.admin_connection(raise_exceptions=True, auto_encode=False)

    def add_user(self, parent: str, uid: str, **attributes: str | bytes) -> str:
        dn = f"uid={escape_rdn(uid)},{parent}"
        with self.connection() as connection:
            connection.add(dn, PERSON, {"cn": uid, "sn": uid, "mail": f"{uid}@idsync.test"} | attributes)
        return dn

    def add_group(self, parent: str, cn: str, members: list[str]) -> str:
        dn = f"cn={cn},{parent}"
        with self.connection() as connection:
            connection.add(dn, ["top", "groupOfNames"], {"cn": cn, "member": members})
        return dn

    def modify(self, dn: str, changes: dict) -> None:
        with self.connection() as connection:
            connection.modify(dn, changes)

    def move(self, dn: str, new_rdn: str, new_parent: str | None = None) -> None:
        with self.connection() as connection:
            connection.modify_dn(dn, new_rdn, delete_old_dn=True, new_superior=new_parent)

    def delete(self, dn: str) -> None:
        with self.connection() as connection:
            connection.delete(dn)

    def entry_uuid(self, dn: str) -> str:
        with self.connection() as connection:
            connection.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["entryUUID"])
            return connection.response[0]["raw_attributes"]["entryUUID"][0].decode()

    def ensure_ou(self, dn: str) -> str:
        with self.connection() as connection:
            ensure_ou(connection, dn)
        return dn


@contextlib.contextmanager
def private_slapd(workdir: Path) -> Iterator[SlapdInstance]:
    """A slapd of the test's own, with ou=people (a reader's base) and ou=elsewhere beside it:
    stopping or restoring the shared forests would disturb whatever else holds them."""
    instance = SlapdInstance(
        workdir / "slapd", name="own", suffix="dc=own,dc=idsync,dc=test", admin_password=secrets.token_urlsafe(16)
    ).start()
    try:
        directory = Directory(instance)
        directory.ensure_ou(f"ou=people,{instance.suffix}")
        directory.ensure_ou(f"ou=elsewhere,{instance.suffix}")
        yield instance
    finally:
        instance.stop()


async def read_changes(
    reader: ChangeReader, position: str, count: int, *, timeout: float = 10
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


async def read_until(
    reader: ChangeReader, position: str, done: Callable[[list[DirectoryChange]], bool], *, timeout: float = 10
) -> tuple[list[DirectoryChange], str]:
    """Reads as the source runner does (a RetriableError means wait a little and read from the
    same position) until `done` holds for what was read."""
    changes: list[DirectoryChange] = []
    deadline = time.monotonic() + timeout
    while not done(changes):
        assert time.monotonic() < deadline, f"not done within {timeout}s: {changes}"
        try:
            batch = await reader.read(position)
        except RetriableError:
            await asyncio.sleep(0.1)
            continue
        changes.extend(batch.changes)
        position = batch.position
    return changes, position


async def read_like_the_runner(
    reader: ChangeReader, position: str, count: int, *, timeout: float = 10
) -> tuple[list[DirectoryChange], str]:
    """At least `count` changes, read as the source runner does."""
    return await read_until(reader, position, lambda changes: len(changes) >= count, timeout=timeout)


def has_dns(*dns: str) -> Callable[[list[DirectoryChange]], bool]:
    return lambda changes: set(dns) <= {change.dn for change in changes}


async def read_past_the_outage(reader: ChangeReader, position: str, *, timeout: float = 10) -> ReadBatch:
    """The first batch with something in it once the directory answers again, read as the
    runner does (RetriableError until then)."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"nothing read within {timeout}s"
        try:
            batch = await reader.read(position)
        except RetriableError:
            await asyncio.sleep(0.1)
            continue
        if batch.is_snapshot or batch.changes:
            return batch
        position = batch.position


def restorable_backup(instance: SlapdInstance, target: Path, *, while_running: bool) -> Path:
    """A backup of both databases, taken while slapd runs (as mdb allows) or with slapd stopped."""
    if while_running:
        return instance.backup(target)
    instance.stop()
    try:
        return instance.backup(target)
    finally:
        instance.start()


def restore(instance: SlapdInstance, backup: Path) -> None:
    instance.stop()
    instance.restore(backup)
    instance.start()


async def assert_quiet(reader: ChangeReader, position: str) -> None:
    batch = await reader.read(position)
    assert batch.changes == () and batch.position == position


async def past_snapshot(reader: ChangeReader, snapshot: ReadBatch) -> str:
    """The first read after a snapshot may publish again what changed while it was read (the
    metaverse has that state): returns the position after that read."""
    batch = await reader.read(snapshot.position)
    assert not batch.is_snapshot
    assert {change.object_id for change in batch.changes} <= {change.object_id for change in snapshot.changes}
    return batch.position


async def every_kind_of_change_once_in_order(reader: ChangeReader, directory: Directory, base: str, outside: str) -> None:
    """A snapshot, then add, modify, member add and remove, rename, moves within, out of and into
    base_dn, delete: each read once, in the order made, as the accesslog readers must."""
    early = directory.add_user(base, "early")
    carol = directory.add_user(outside, "carol", displayName="Carol")

    snapshot = await reader.read(None)
    assert snapshot.is_snapshot and not snapshot.rejected
    assert {change.dn for change in snapshot.changes} == {base, early}
    assert all(change.op is ChangeOp.ADD for change in snapshot.changes)
    position = await past_snapshot(reader, snapshot)

    alice = directory.add_user(base, "alice")
    directory.modify(alice, {"displayName": [(ldap3.MODIFY_REPLACE, ["Alice A"])]})
    bob = directory.add_user(base, "bob")
    staff = directory.add_group(base, "staff", [alice])
    directory.modify(staff, {"member": [(ldap3.MODIFY_ADD, [bob])]})
    directory.modify(staff, {"member": [(ldap3.MODIFY_DELETE, [alice])]})
    directory.move(alice, "uid=alice.renamed")
    renamed = f"uid=alice.renamed,{base}"
    sub = directory.ensure_ou(f"ou=sub,{base}")
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
    # Positions are the records' CSNs: unique and in the order the changes committed.
    positions = [c.position for c in changes]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    # Every event names its kind, though the accesslog states it only on adds.
    user, group, other = ObjectKind.USER, ObjectKind.GROUP, ObjectKind.OTHER
    assert [c.kind for c in changes] == [user, user, user, group, group, group, user, other, user, user, user, user]


async def burst_from_concurrent_writers_each_change_once(reader: ChangeReader, instance: SlapdInstance, base: str) -> None:
    """2,000 modifies from 4 writers at once: each read once, each object's in the order made
    (a write that began earlier can commit after a later one)."""
    directory = Directory(instance)
    writers, per_writer = 4, 500
    users = [directory.add_user(base, f"burst.{n}") for n in range(writers)]
    position = await past_snapshot(reader, await reader.read(None))
    failures: list[BaseException] = []

    def write(user: str) -> None:
        try:
            with directory.connection() as connection:
                for n in range(per_writer):
                    connection.modify(user, {"description": [(ldap3.MODIFY_REPLACE, [str(n)])]})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
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
    positions = [c.position for c in changes]
    assert len(set(positions)) == len(changes)  # none twice
    assert positions == sorted(positions)  # in commit order
    values: dict[str, list[int]] = {user: [] for user in users}
    for change in changes:
        assert change.op is ChangeOp.MODIFY
        (modification,) = change.modifications
        values[change.dn].append(int(modification.values[0]))
    disorder = {user: _first_disorder(seen) for user, seen in values.items() if seen != list(range(per_writer))}
    assert not disorder, f"changes of one object out of order (index, values around it): {disorder}"


def _first_disorder(values: list[int]) -> tuple[int, list[int]]:
    index = next(i for i, value in enumerate(values) if value != i)
    return index, values[max(0, index - 3) : index + 3]


# --- a SourceRunner publishing to real topics -------------------------------------------------


def kafka_settings(broker: KafkaBroker, prefix: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        client_id=prefix,
        partitions=3,
        replication_factor=1,
        topics=Topics(**{name: f"{prefix}.{name}" for name in ("changes", "positions", "contacts", "errors")}),
    )


@dataclass
class Published:
    """What reached the changes and errors topics, in the order each partition holds it."""

    changes: list[DirectoryChange] = field(default_factory=list)
    snapshots_ended: int = 0
    # Headers (without their idsync.errors. prefix) and value of each dead letter.
    dead_letters: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def live(self, object_id: str) -> list[DirectoryChange]:
        """The changes of one object outside snapshots."""
        return [change for change in self.changes if change.object_id == object_id and change.snapshot_id is None]


class SourceUnderTest:
    """A SourceRunner (the worker's producer, real topics) reading one forest, and a consumer of
    its topics; wait() fails at once should the runner die."""

    def __init__(self, forest: Forest, kafka: KafkaSettings) -> None:
        self.forest = forest
        self.kafka = kafka
        self.published = Published()
        self._runner: asyncio.Task | None = None
        self._consumer = AIOKafkaConsumer(
            kafka.topics.changes,
            kafka.topics.errors,
            bootstrap_servers=kafka.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SourceUnderTest]:
        """The runner runs inside the block and is cancelled when it is left."""
        await ensure_topics(self.kafka)
        async with contextlib.AsyncExitStack() as cleanup:
            await self._consumer.start()
            cleanup.push_async_callback(self._consumer.stop)
            producer = producer_for(self.kafka)
            await producer.start()
            cleanup.push_async_callback(producer.stop)
            reader = make_reader(self.forest)
            cleanup.push_async_callback(reader.close)
            positions = PositionStore(producer, kafka=self.kafka, topic=self.kafka.topics.positions)
            runner = SourceRunner(
                reader, producer=producer, positions=positions, topics=self.kafka.topics, kinds=self.forest.object_kinds
            )
            self._runner = asyncio.create_task(runner.run())
            cleanup.push_async_callback(_cancelled, self._runner)
            yield self

    async def wait(self, condition: Callable[[Published], bool], *, timeout: float = 30, what: str) -> Published:
        deadline = time.monotonic() + timeout
        while not condition(self.published):
            if self._runner is not None and self._runner.done():
                raise AssertionError(f"the runner stopped before {what}") from self._runner.exception()
            assert time.monotonic() < deadline, f"{what} not within {timeout}s; published {self.published}"
            for partition, records in (await self._consumer.getmany(timeout_ms=100)).items():
                for record in records:
                    self._note(partition.topic, record)
        return self.published

    def _note(self, topic: str, record) -> None:
        if topic == self.kafka.topics.errors:
            headers = {name.removeprefix("idsync.errors."): value.decode() for name, value in record.headers}
            self.published.dead_letters.append((headers, record.value))
            return
        event = decode_change_topic(record.value)
        if isinstance(event, DirectoryChange):
            self.published.changes.append(event)
        elif isinstance(event, SnapshotMarker) and event.phase is SnapshotPhase.END:
            self.published.snapshots_ended += 1


async def _cancelled(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def snapshot_done(published: Published) -> bool:
    # A snapshot's END marker goes to every partition.
    return published.snapshots_ended >= 3


# --- hostile entries -----------------------------------------------------------------------------

# Every character RFC 4514 escapes in a DN, and one outside ASCII.
HOSTILE_NAME = 'Evil, Inc. + "Co" <x>; #1 \\ y=é'
LARGE_VALUE = "x" * 1_000_000
NOT_UTF8 = b"caf\xe9 \xff\xfe"


async def hostile_entries_are_published_or_dead_lettered(source: SourceUnderTest, directory: Directory, base: str) -> None:
    """A DN of special characters, a 1 MB value and bytes that are not UTF-8, then a plain entry:
    each hostile one becomes a correct event or a dead letter, and the stream goes on."""
    async with source.running():
        await source.wait(snapshot_done, what="the first snapshot")
        hostile = directory.add_user(base, HOSTILE_NAME, displayName=HOSTILE_NAME, mail="hostile@idsync.test")
        large = directory.add_user(base, "large", description=LARGE_VALUE)
        # slapd refuses bytes that are not UTF-8 in a string attribute; an octet string takes them.
        with pytest.raises(ldap3.core.exceptions.LDAPInvalidAttributeSyntaxResult):
            directory.add_user(base, "not.utf8.text", description=NOT_UTF8)
        binary = directory.add_user(base, "not.utf8.binary", audio=NOT_UTF8)
        after = directory.add_user(base, "after.hostile")
        ids = {dn: directory.entry_uuid(dn) for dn in (hostile, large, binary, after)}

        published = await source.wait(
            lambda p: p.live(ids[after]) and p.live(ids[binary]) and p.live(ids[hostile]) and p.dead_letters,
            what="the entries after the hostile ones",
        )
        (event,) = published.live(ids[hostile])
        assert event.attributes["uid"] == (HOSTILE_NAME,) and event.attributes["displayName"] == (HOSTILE_NAME,)
        assert directory.entry_uuid(event.dn) == event.object_id  # the DN, however escaped, names the entry
        (event,) = published.live(ids[binary])
        assert event.attributes["audio;base64"] == ("Y2Fm6SD//g==",)
        # Too large for an event: a dead letter naming the entry, and no event.
        assert published.live(ids[large]) == []
        (headers, _), *others = published.dead_letters
        assert not others and headers["stage"] == "reader" and "over the" in headers["reason"] and large in headers["reason"]

