"""The site writer against the real broker and real site stores (SQLite, PostgreSQL): writes
applied and their offsets committed only after the write returned, the same write again writes
nothing, other stores' writes passed over, a store outage retried without losing or skipping a
write, a login that left the site skipped without touching the membership list."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer

from connectors.sites import SqlSiteStore
from idsync.rig import KafkaBroker
from idsync.kafka_clients import producer_for
from streams.config.topology import KafkaSettings
from streams.contracts import SiteWriter
from streams.monitoring.metrics import SITE_SINK_UP, SITE_WRITES
from streams.processors.site_sink import SiteSinkRunner, site_writer_group
from streams.site_events import MembershipOp, SiteWrite
from tests.integration.site_stores import SiteDb, closing, committed, kafka_settings, records, site_db

pytestmark = pytest.mark.integration
__all__ = ["site_db"]


@dataclass
class Sent:
    partition: int
    offset: int


def write(store: str, login: str, site: str = "hr", **properties: str) -> SiteWrite:
    return SiteWrite(store=store, site=site, login=login, person=f"person-{login}", properties=properties,
                     reason="profile", changed_at="2026-12-04T08:00:00+00:00")


async def send(kafka: KafkaSettings, *writes: SiteWrite) -> list[Sent]:
    producer = producer_for(kafka)
    await producer.start()
    try:
        sent = []
        for w in writes:
            meta = await producer.send_and_wait(kafka.topics.site_writes, key=w.key(), value=w.to_bytes())
            sent.append(Sent(meta.partition, meta.offset))
        return sent
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def writer_for(kafka: KafkaSettings, db: SiteDb, group: str,
                     wrap: Callable[[SqlSiteStore], SiteWriter] = lambda store: store) -> AsyncIterator[SqlSiteStore]:
    """The store's writer running as the worker runs it; yields the writer's own store connection."""
    consumer = AIOKafkaConsumer(kafka.topics.site_writes, bootstrap_servers=kafka.bootstrap_servers, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    producer = producer_for(kafka)
    store = db.open()
    await producer.start()
    await consumer.start()
    runner = SiteSinkRunner(wrap(store), store=db.settings.name, consumer=consumer, producer=producer,
                            topics=kafka.topics)
    task = asyncio.create_task(runner.run())
    try:
        yield store
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()
        store.close()


async def until(condition: Callable[[], object], timeout: float = 20.0) -> None:
    """Wait for `condition` (a function, or one returning an awaitable) to hold."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await _result(condition()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _result(value: object) -> object:
    return await value if inspect.isawaitable(value) else value


async def past(kafka: KafkaSettings, group: str, sent: Sent) -> bool:
    """The group committed past the record."""
    return (await committed(kafka, group)).get(sent.partition, 0) > sent.offset


def member_properties(db: SiteDb, site: str = "hr") -> dict[str, dict[str, str]]:
    with closing(admin := db.admin()):
        return {m.login: dict(m.properties) for m in admin.members(site)[0]}


class Gate:
    """The store, with bob's writes held until released (the runner calls it from a worker thread)."""

    def __init__(self, store: SqlSiteStore) -> None:
        self.store = store
        self.entered = threading.Event()
        self.release = threading.Event()

    def write_properties(self, site: str, login: str, properties: Mapping[str, str]) -> dict[str, str]:
        if login == "bob":
            self.entered.set()
            assert self.release.wait(30)
        return self.store.write_properties(site, login, properties)

    def close(self) -> None:
        self.store.close()


async def test_writes_are_applied_and_committed_only_after_the_write(
        site_db: SiteDb, kafka_broker: KafkaBroker, unique_name: str) -> None:
    kafka = await kafka_settings(kafka_broker, unique_name)
    name, group = site_db.settings.name, site_writer_group(unique_name, site_db.settings.name)
    with closing(admin := site_db.admin()):
        admin.create_site("hr")
        admin.add_member("hr", "alice", {"JobTitle": "Engineer"})
        admin.add_member("hr", "bob")
    gates: list[Gate] = []
    async with writer_for(kafka, site_db, group, wrap=lambda store: gates.append(Gate(store)) or gates[-1]):
        try:
            alice, other = await send(kafka, write(name, "alice", JobTitle="Lead", Department="Ops"),
                                      write("elsewhere", "alice", JobTitle="Not for this store"))
            await until(lambda: member_properties(site_db)["alice"] == {"JobTitle": "Lead", "Department": "Ops"})
            for sent in (alice, other):
                await until(lambda: past(kafka, group, sent))
            # bob's write is held inside the store call: its offset must not be committed meanwhile.
            (bob,) = await send(kafka, write(name, "bob", JobTitle="Intern"))
            await until(gates[0].entered.is_set)
            await asyncio.sleep(1.0)  # a commit would have happened by now
            assert not await past(kafka, group, bob)
            assert member_properties(site_db)["bob"] == {}
        finally:
            gates[0].release.set()
        await until(lambda: member_properties(site_db)["bob"] == {"JobTitle": "Intern"})
        await until(lambda: past(kafka, group, bob))

        with closing(admin := site_db.admin()):
            token = admin.changes("hr", "0").token
        unchanged = SITE_WRITES.labels(name, "unchanged")._value.get()
        (again,) = await send(kafka, write(name, "alice", JobTitle="Lead"))
        await until(lambda: past(kafka, group, again))
        with closing(admin := site_db.admin()):
            assert admin.changes("hr", "0").token == token
        assert SITE_WRITES.labels(name, "unchanged")._value.get() == unchanged + 1


async def test_an_outage_is_retried_without_losing_or_skipping_a_write(
        site_db: SiteDb, kafka_broker: KafkaBroker, unique_name: str) -> None:
    kafka = await kafka_settings(kafka_broker, unique_name)
    name, group = site_db.settings.name, site_writer_group(unique_name, site_db.settings.name)
    with closing(admin := site_db.admin()):
        admin.create_site("hr")
        for login in ("alice", "bob", "carol"):
            admin.add_member("hr", login)
    async with writer_for(kafka, site_db, group) as store:
        await send(kafka, write(name, "alice", JobTitle="Lead"))
        await until(lambda: member_properties(site_db)["alice"] == {"JobTitle": "Lead"})
        bring_back = site_db.take_down(store)
        try:
            pending = await send(kafka, write(name, "alice", Department="Ops"), write(name, "bob", JobTitle="Intern"),
                                 write(name, "carol", JobTitle="CEO"), write(name, "alice", Department="Sales"))
            await until(lambda: SITE_SINK_UP.labels(name)._value.get() == 0)
            await asyncio.sleep(1.0)
            offsets = await committed(kafka, group)
            assert all(offsets.get(sent.partition, 0) <= sent.offset for sent in pending)
        finally:
            bring_back()
        expected = {"alice": {"JobTitle": "Lead", "Department": "Sales"}, "bob": {"JobTitle": "Intern"},
                    "carol": {"JobTitle": "CEO"}}
        await until(lambda: member_properties(site_db) == expected, timeout=45)
        for sent in pending:
            await until(lambda: past(kafka, group, sent))
        assert SITE_SINK_UP.labels(name)._value.get() == 1
    with closing(admin := site_db.admin()):
        logged = [(c.member_login, c.properties) for c in admin.changes("hr", "0").changes
                  if c.op is MembershipOp.PROPERTIES_CHANGED]
    # Each write applied once; alice's (one key, one partition) in order: Ops before Sales.
    assert sorted(logged, key=str) == sorted([
        ("alice", {"JobTitle": "Lead"}), ("alice", {"JobTitle": "Lead", "Department": "Ops"}),
        ("bob", {"JobTitle": "Intern"}), ("carol", {"JobTitle": "CEO"}),
        ("alice", {"JobTitle": "Lead", "Department": "Sales"})], key=str)
    alice_changes = [p.get("Department") for login, p in logged if login == "alice"]
    assert alice_changes == [None, "Ops", "Sales"]


async def test_a_login_that_left_the_site_is_skipped_and_the_list_left_alone(
        site_db: SiteDb, kafka_broker: KafkaBroker, unique_name: str) -> None:
    kafka = await kafka_settings(kafka_broker, unique_name)
    name, group = site_db.settings.name, site_writer_group(unique_name, site_db.settings.name)
    with closing(admin := site_db.admin()):
        admin.create_site("hr")
        admin.add_member("hr", "alice")
        admin.add_member("hr", "bob")
        admin.remove_member("hr", "bob")
    skipped = SITE_WRITES.labels(name, "skipped")._value.get()
    async with writer_for(kafka, site_db, group):
        sent = await send(kafka, write(name, "bob", JobTitle="Intern"), write(name, "alice", JobTitle="Lead"))
        await until(lambda: member_properties(site_db) == {"alice": {"JobTitle": "Lead"}})
        for s in sent:
            await until(lambda: past(kafka, group, s))
    assert SITE_WRITES.labels(name, "skipped")._value.get() == skipped + 1
    assert await records(kafka, kafka.topics.errors, count=1) == []
    with closing(admin := site_db.admin()):
        last = admin.changes("hr", "0").changes[-1]
    assert (last.member_login, last.op) == ("alice", MembershipOp.PROPERTIES_CHANGED)
