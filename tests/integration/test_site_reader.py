"""The site membership reader against the real broker and real site stores (a SQLite file and a
PostgreSQL database reached with its password from the environment): the first run of a site is
full, the next incremental, a restart resumes from the token saved after Kafka's acks; an expired
token and a restored store each make the next run full; a store that is down is retried and
reported while another store keeps flowing, and recovers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from connectors.sites.store import token_counter as counter
from idsync.rig import KafkaBroker
from idsync.kafka_clients import producer_for
from streams.config.topology import KafkaSettings
from streams.kafka.site_positions import SitePositionStore
from streams.monitoring.metrics import READER_OUTAGES, READER_UP
from streams.processors.site_reader import SiteReaderRunner, reader_label
from streams.site_events import MembershipOp, SiteMembershipChange, SiteSnapshotEnd, decode_site_change_topic
from tests.integration.site_stores import PARTITIONS, SiteDb, closing, kafka_settings, records, site_db, sqlite_db

pytestmark = pytest.mark.integration
__all__ = ["site_db"]


@contextlib.asynccontextmanager
async def reader_for(kafka: KafkaSettings, db: SiteDb) -> AsyncIterator[SiteReaderRunner]:
    """A reader as the worker builds it: its own producer and its own connection to the store."""
    producer = producer_for(kafka)
    await producer.start()
    source = db.open()
    try:
        yield SiteReaderRunner(source, store=db.settings.name, producer=producer, topics=kafka.topics, partitions=None,
                               positions=SitePositionStore(producer, kafka=kafka, topic=kafka.topics.positions),
                               poll_interval=db.settings.poll_interval_seconds)
    finally:
        source.close()
        await producer.stop()


async def published(kafka: KafkaSettings) -> list[tuple[int, SiteMembershipChange | SiteSnapshotEnd]]:
    return [(r.partition, decode_site_change_topic(r.value)) for r in await records(kafka, kafka.topics.site_changes)]


async def stored_states(kafka: KafkaSettings, store: str) -> dict:
    # Loading needs no producer.
    positions = SitePositionStore(None, kafka=kafka, topic=kafka.topics.positions)  # type: ignore[arg-type]
    return await positions.load_all(store)


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_first_run_full_second_incremental_and_a_restart_publishes_nothing_again(
        site_db: SiteDb, kafka_broker: KafkaBroker, unique_name: str) -> None:
    kafka = await kafka_settings(kafka_broker, unique_name)
    name = site_db.settings.name
    admin = site_db.admin()
    with closing(admin):
        admin.create_site("hr")
        for login in ("alice@example.test", "bob@example.test", "carol@example.test"):
            admin.add_member("hr", login, {"JobTitle": f"title of {login}"})
        async with reader_for(kafka, site_db) as reader:
            (first,) = await reader.sync_once()

        found = await published(kafka)
        members = [event for _, event in found if isinstance(event, SiteMembershipChange)]
        ends = [(partition, event) for partition, event in found if isinstance(event, SiteSnapshotEnd)]
        assert sorted(m.member_login for m in members) == ["alice@example.test", "bob@example.test",
                                                           "carol@example.test"]
        assert {(m.op, m.store, m.snapshot_id, counter(m.change_token)) for m in members} == {
            (MembershipOp.ADDED, name, ends[0][1].snapshot_id, 3)}
        assert sorted(partition for partition, _ in ends) == list(range(PARTITIONS))
        for partition in range(PARTITIONS):  # on each partition the end comes after the members
            assert isinstance([e for p, e in found if p == partition][-1], SiteSnapshotEnd)
        assert (ends[0][1].members, ends[0][1].reason, counter(ends[0][1].token)) == (3, "no-token", 3)
        assert (first.mode, first.reason, first.changes, counter(first.token)) == ("full", "no-token", 3, 3)
        assert await stored_states(kafka, name) == {"hr": first}

        admin.change_properties("hr", "bob@example.test", {"JobTitle": "Lead"})
        admin.remove_member("hr", "carol@example.test")
        async with reader_for(kafka, site_db) as reader:  # a restart: resumes from the stored token
            (second,) = await reader.sync_once()
        after = await published(kafka)
        assert len(after) == len(found) + 2
        assert sorted((e.member_login, e.op, e.store) for _, e in after if isinstance(e, SiteMembershipChange)
                      and e.snapshot_id is None) == [("bob@example.test", MembershipOp.PROPERTIES_CHANGED, name),
                                                     ("carol@example.test", MembershipOp.REMOVED, name)]
        assert (second.mode, second.reason, second.changes, counter(second.token)) == ("incremental", "changes", 2, 5)
        assert (second.last_full_at, second.last_full_reason) == (first.at, "no-token")

        async with reader_for(kafka, site_db) as reader:
            assert await reader.sync_once() == [second]
        assert len(await published(kafka)) == len(after)
        assert await stored_states(kafka, name) == {"hr": second}


async def test_an_expired_token_and_a_restored_store_each_make_the_next_run_full(
        site_db: SiteDb, kafka_broker: KafkaBroker, unique_name: str) -> None:
    kafka = await kafka_settings(kafka_broker, unique_name)
    admin = site_db.admin(retain_changes=3)
    with closing(admin):
        admin.create_site("sales")
        admin.add_member("sales", "user0")
        async with reader_for(kafka, site_db) as reader:
            await reader.sync_once()
            for n in range(1, 6):  # the store keeps 3 changes: token 1 is gone from its log
                admin.add_member("sales", f"user{n}")
            (expired,) = await reader.sync_once()
            assert (expired.mode, expired.reason, counter(expired.token), expired.changes) == ("full", "expired", 6, 6)
            site_db.backup()
            admin.add_member("sales", "user6")
            admin.add_member("sales", "user7")
            (incremental,) = await reader.sync_once()
            assert (incremental.mode, counter(incremental.token), incremental.last_full_reason) == (
                "incremental", 8, "expired")
    site_db.restore()
    async with reader_for(kafka, site_db) as reader:
        (restored,) = await reader.sync_once()
    assert (restored.mode, restored.reason, counter(restored.token)) == ("full", "restored", 6)
    assert (restored.last_full_at, restored.last_full_reason) == (restored.at, "restored")
    assert (await stored_states(kafka, site_db.settings.name))["sales"] == restored


async def test_a_store_that_is_down_is_retried_and_reported_while_another_store_flows(
        site_db: SiteDb, kafka_broker: KafkaBroker, unique_name: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    kafka = await kafka_settings(kafka_broker, unique_name)
    other = sqlite_db(tmp_path, f"o{unique_name[-6:]}")
    down = site_db.settings.name
    for db, site in ((site_db, "a"), (other, "b")):
        with closing(admin := db.admin()):
            admin.create_site(site)
            admin.add_member(site, "first")
    up, outages = READER_UP.labels(reader_label(down)), READER_OUTAGES.labels(reader_label(down))
    outages_before = outages._value.get()
    async with reader_for(kafka, site_db) as reader_a, reader_for(kafka, other) as reader_b:
        tasks = [asyncio.create_task(reader_a.run()), asyncio.create_task(reader_b.run())]
        try:
            await until(lambda: "a" in reader_a.states and "b" in reader_b.states)
            bring_back = site_db.take_down(reader_a._source)  # type: ignore[arg-type]
            with closing(admin_b := other.admin()):
                admin_b.add_member("b", "second")
            await until(lambda: counter(reader_b.states["b"].token) == 2)
            await until(lambda: up._value.get() == 0)
            assert outages._value.get() == outages_before + 1
            bring_back()
            with closing(admin_a := site_db.admin()):
                admin_a.add_member("a", "second")
            await until(lambda: counter(reader_a.states["a"].token) == 2 and up._value.get() == 1, timeout=45)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    lines = [r.message for r in caplog.records if f"component=site-reader store={down}" in r.message]
    assert [line.split(" component")[0] for line in lines if line.startswith("outage")] == ["outage started",
                                                                                           "outage ended"]
    if site_db.settings.password is not None:
        assert site_db.settings.password.reveal() not in caplog.text
    logins = sorted(e.member_login for _, e in await published(kafka) if isinstance(e, SiteMembershipChange)
                    and e.store == down)
    assert logins == ["first", "second"]
