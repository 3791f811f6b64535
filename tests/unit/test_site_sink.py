"""The site writer's runner over a real SQLite site store, with Kafka's consumer and producer in
memory: writes applied in order and committed after, an outage retried without skipping or
committing, a login that left the site skipped, other failures dead-lettered, other stores'
writes passed over. (Against the real broker and PostgreSQL: tests/integration/test_site_sink.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from connectors.sites import SqlSiteStore, open_store
from streams.config.topology import Topics
from streams.contracts import RetriableError
from streams.monitoring.metrics import SITE_SINK_UP, SITE_WRITES
from streams.processors.site_sink import SiteSinkRunner, site_writer_group
from streams.site_events import SiteWrite

TOPIC = "site-writes"
P0 = TopicPartition(TOPIC, 0)
TOPICS = Topics(changes="changes", positions="positions", contacts="contacts", errors="errors")


def write(login: str, store: str = "intranet", site: str = "hr", **properties: str) -> SiteWrite:
    return SiteWrite(store=store, site=site, login=login, person=f"person-{login}", properties=properties,
                     reason="profile", changed_at="2026-12-04T08:00:00+00:00")


class Consumer:
    """Hands out what was queued, one batch per call, on partition 0; records commits."""

    def __init__(self) -> None:
        self.queue: list[tuple[bytes, bytes]] = []
        self.offset = 0
        self.commits: list[int] = []

    def send(self, *writes: SiteWrite) -> None:
        self.queue += [(w.key(), w.to_bytes()) for w in writes]

    async def getmany(self, timeout_ms: int, max_records: int):
        if not self.queue:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        records = []
        for key, value in self.queue:
            records.append(ConsumerRecord(topic=TOPIC, partition=0, offset=self.offset, timestamp=0, timestamp_type=0,
                                          key=key, value=value, checksum=None, serialized_key_size=len(key),
                                          serialized_value_size=len(value), headers=()))
            self.offset += 1
        self.queue.clear()
        return {P0: records}

    async def commit(self, offsets):
        self.commits.append(offsets[P0])


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict]] = []

    async def send_and_wait(self, topic, *, key, value, headers):
        self.sent.append((topic, value, {name: v.decode() for name, v in headers}))


class Flaky:
    """The store down for the first `failures` writes."""

    def __init__(self, store: SqlSiteStore, failures: int) -> None:
        self.store = store
        self.failures = failures
        self.attempts = 0

    def write_properties(self, site, login, properties):
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise RetriableError("postgresql site store: OperationalError: connection refused")
        return self.store.write_properties(site, login, properties)


@pytest.fixture
def store(tmp_path: Path):
    store = open_store(tmp_path / "sites.db", create=True)
    store.create_site("hr")
    store.add_member("hr", "alice", {"JobTitle": "Engineer"})
    store.add_member("hr", "bob")
    yield store
    store.close()


@contextlib.asynccontextmanager
async def running(runner: SiteSinkRunner):
    task = asyncio.create_task(runner.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def count(outcome: str) -> float:
    return SITE_WRITES.labels("intranet", outcome)._value.get()


def properties(store: SqlSiteStore, login: str) -> dict[str, str]:
    return {m.login: dict(m.properties) for m in store.members("hr")[0]}[login]


def test_the_group_is_per_store() -> None:
    assert site_writer_group("idsync", "intranet") == "idsync-site-writer-intranet"


async def test_writes_are_applied_in_order_then_committed(store: SqlSiteStore,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    consumer, producer = Consumer(), Producer()
    written, unchanged = count("written"), count("unchanged")
    consumer.send(write("alice", JobTitle="Lead"), write("alice", JobTitle="Director", Department="Ops"),
                  write("alice", JobTitle="Director"), write("carol", store="extranet", JobTitle="x"))
    async with running(SiteSinkRunner(store, store="intranet", consumer=consumer, producer=producer, topics=TOPICS)):
        await until(lambda: consumer.commits)
    assert consumer.commits == [4]
    assert properties(store, "alice") == {"JobTitle": "Director", "Department": "Ops"}
    assert (count("written") - written, count("unchanged") - unchanged) == (2, 1)
    assert producer.sent == []
    text = caplog.text
    assert "properties=Department,JobTitle" in text and "Director" not in text and "Lead" not in text


async def test_an_outage_retries_the_same_record_and_commits_nothing_meanwhile(
        store: SqlSiteStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    flaky, consumer = Flaky(store, failures=3), Consumer()
    consumer.send(write("alice", JobTitle="Lead"), write("bob", JobTitle="Intern"))
    up = SITE_SINK_UP.labels("intranet")
    seen_down = False

    def done() -> bool:
        nonlocal seen_down
        seen_down = seen_down or up._value.get() == 0
        return bool(consumer.commits)

    async with running(SiteSinkRunner(flaky, store="intranet", consumer=consumer, producer=Producer(), topics=TOPICS)):
        while not flaky.failures == 0:
            assert consumer.commits == [] and properties(store, "bob") == {}
            done()
            await asyncio.sleep(0.01)
        await until(done)
    assert seen_down and up._value.get() == 1
    assert consumer.commits == [2] and flaky.attempts == 5
    assert properties(store, "alice")["JobTitle"] == "Lead" and properties(store, "bob") == {"JobTitle": "Intern"}
    outages = [r.message for r in caplog.records if "outage" in r.message]
    assert len(outages) == 2 and outages[0].startswith("outage started component=site-writer store=intranet")


async def test_a_login_no_longer_a_member_is_skipped_and_other_failures_dead_lettered(
        store: SqlSiteStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    consumer, producer = Consumer(), Producer()
    skipped, errors = count("skipped"), count("error")
    store.remove_member("hr", "bob")
    consumer.send(write("bob", JobTitle="Intern"), write("alice", site="gone", JobTitle="x"),
                  write("alice", JobTitle="Lead"))
    consumer.queue.append((b"intranet/hr/dave", b"{not json"))
    async with running(SiteSinkRunner(store, store="intranet", consumer=consumer, producer=producer, topics=TOPICS)):
        await until(lambda: consumer.commits)
    assert consumer.commits == [4] and properties(store, "alice")["JobTitle"] == "Lead"
    assert [m.login for m in store.members("hr")[0]] == ["alice"]
    assert (count("skipped") - skipped, count("error") - errors) == (1, 2)
    assert any(r.levelno == logging.INFO and r.message.startswith("site write skipped, no longer a member")
               for r in caplog.records)
    assert [(topic, headers["idsync.errors.stage"], headers["idsync.errors.offset"]) for topic, _, headers in
            producer.sent] == [("errors", "site-writer", "1"), ("errors", "site-writer", "3")]
    assert "no site 'gone'" in producer.sent[0][2]["idsync.errors.reason"]
