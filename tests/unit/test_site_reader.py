"""The site membership reader over a real SQLite site store, with Kafka's producer and the
positions topic in memory: full and incremental passes, state saved only after acks, paging,
expiry, requested full reads, a vanished site skipped, a store outage retried.
(Against the real broker and PostgreSQL too: tests/integration/test_site_reader.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from connectors.sites import SqlSiteStore, open_store
from connectors.sites.store import token_counter as counter
from streams.config.topology import Topics
from streams.contracts import NeedsAttention, PermanentError, RetriableError
from streams.monitoring.metrics import READER_UP
from streams.processors import site_reader
from streams.processors.site_reader import SNAPSHOT_END_KEY, SiteReaderRunner, next_state
from streams.site_events import (
    MembershipOp, SiteMembershipChange, SiteSnapshotEnd, SiteSyncState, SyncMode, decode_site_change_topic, login_key,
)

TOPICS = Topics(changes="changes", positions="positions", contacts="contacts", errors="errors")


class Producer:
    """Records sends; acknowledges them at once unless `hold` (then release() does)."""

    def __init__(self, *, hold: bool = False) -> None:
        self.sent: list[tuple[str, bytes, int | None, SiteMembershipChange | SiteSnapshotEnd]] = []
        self.hold = hold
        self.pending: list[asyncio.Future] = []

    async def send(self, topic, *, key, value, partition=None):
        self.sent.append((topic, key, partition, decode_site_change_topic(value)))
        future = asyncio.get_running_loop().create_future()
        if self.hold:
            self.pending.append(future)
        else:
            future.set_result(None)
        return future

    def release(self) -> None:
        for future in self.pending:
            future.set_result(None)
        self.pending.clear()

    async def partitions_for(self, topic):
        return {0, 1, 2}

    def events(self) -> list:
        events = [event for _, _, _, event in self.sent]
        self.sent.clear()
        return events


class Positions:
    def __init__(self, states: dict[str, SiteSyncState] | None = None) -> None:
        self.saved: list[SiteSyncState] = []
        self.initial = dict(states or {})

    async def load_all(self, store: str) -> dict[str, SiteSyncState]:
        return dict(self.initial)

    async def save(self, state: SiteSyncState) -> None:
        self.saved.append(state)

    async def forget(self, store: str, site: str) -> None:
        self.saved.append(None)


@pytest.fixture
def store(tmp_path: Path):
    store = open_store(tmp_path / "sites.db", create=True, retain_changes=5)
    yield store
    store.close()


def runner(source, producer: Producer, positions: Positions, partitions: int | None = 3) -> SiteReaderRunner:
    return SiteReaderRunner(source, store="intranet", producer=producer, topics=TOPICS, partitions=partitions,
                            positions=positions, poll_interval=0.01)


async def test_first_pass_is_full_the_next_incremental_and_an_idle_one_saves_nothing(store: SqlSiteStore) -> None:
    store.create_site("hr")
    store.add_member("hr", "Alice@Example.test", {"JobTitle": "Engineer"})
    store.add_member("hr", "bob@example.test")
    producer, positions = Producer(), Positions()
    reader = runner(store, producer, positions)

    (state,) = await reader.sync_once()
    members = [e for _, _, _, e in producer.sent if isinstance(e, SiteMembershipChange)]
    ends = [(key, partition, e) for _, key, partition, e in producer.sent if isinstance(e, SiteSnapshotEnd)]
    assert [(m.member_login, m.op, m.store, counter(m.change_token), dict(m.properties)) for m in members] == [
        ("Alice@Example.test", MembershipOp.ADDED, "intranet", 2, {"JobTitle": "Engineer"}),
        ("bob@example.test", MembershipOp.ADDED, "intranet", 2, {})]
    assert producer.sent[0][1] == login_key("alice@example.test")
    assert len({m.snapshot_id for m in members}) == 1 and members[0].snapshot_id
    # The snapshot end comes after every member, once on each partition.
    assert [partition for _, partition, _ in ends] == [0, 1, 2] and {key for key, _, _ in ends} == {SNAPSHOT_END_KEY}
    assert producer.sent[-3][3] == ends[0][2]
    assert (ends[0][2].snapshot_id, ends[0][2].members, ends[0][2].reason) == (members[0].snapshot_id, 2, "no-token")
    assert (state.mode, state.reason, counter(state.token), state.changes) == ("full", "no-token", 2, 2)
    assert (state.last_full_at, state.last_full_reason) == (state.at, "no-token")
    assert positions.saved == [state]

    producer.sent.clear()
    store.change_properties("hr", "bob@example.test", {"JobTitle": "Lead"})
    store.remove_member("hr", "Alice@Example.test")
    (second,) = await reader.sync_once()
    assert [(e.member_login, e.op, e.store, e.snapshot_id) for e in producer.events()] == [
        ("bob@example.test", MembershipOp.PROPERTIES_CHANGED, "intranet", None),
        ("Alice@Example.test", MembershipOp.REMOVED, "intranet", None)]
    assert (second.mode, second.reason, counter(second.token), second.changes) == ("incremental", "changes", 4, 2)
    assert (second.last_full_at, second.last_full_reason) == (state.at, "no-token")

    assert await reader.sync_once() == [second]
    assert producer.sent == [] and positions.saved == [state, second]


async def test_the_state_is_saved_only_once_kafka_acknowledged_everything(store: SqlSiteStore) -> None:
    store.create_site("hr")
    store.add_member("hr", "alice")
    producer, positions = Producer(hold=True), Positions()
    task = asyncio.create_task(runner(store, producer, positions).sync_once())
    while len(producer.pending) < 4:  # a member and three snapshot ends
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert positions.saved == [] and not task.done()
    producer.release()
    (state,) = await task
    assert positions.saved == [state]


async def test_a_stored_token_resumes_and_a_long_backlog_is_read_page_by_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(site_reader, "PAGE_SIZE", 10)
    store = open_store(tmp_path / "big.db", create=True)
    try:
        store.create_site("big")
        store.add_member("big", "first")
        stored = next_state(None, store="intranet", site="big", token="1", mode=SyncMode.FULL, reason="no-token",
                            at="2026-12-01T00:00:00+00:00", changes=1)
        for n in range(25):
            store.add_member("big", f"user{n}")
        pages: list[str | None] = []
        read_changes = store.changes
        store.changes = lambda site, token, limit: pages.append(token) or read_changes(site, token, limit)
        producer, positions = Producer(), Positions({"big": stored})
        (state,) = await runner(store, producer, positions, partitions=None).sync_once()
        assert [counter(page) for page in pages] == [1, 11, 21]
        assert [e.member_login for e in producer.events()] == [f"user{n}" for n in range(25)]
        assert (state.mode, counter(state.token), state.changes, state.last_full_reason) == (
            "incremental", 26, 25, "no-token")
        assert positions.saved == [state]
    finally:
        store.close()


async def test_an_expired_token_or_a_request_reads_the_site_whole(store: SqlSiteStore) -> None:
    store.create_site("hr")
    store.add_member("hr", "alice")
    producer, positions = Producer(), Positions()
    reader = runner(store, producer, positions)
    await reader.sync_once()
    for n in range(8):  # the store keeps 5 changes: token 1 expires
        store.add_member("hr", f"user{n}")
    producer.sent.clear()
    (expired,) = await reader.sync_once()
    assert (expired.mode, expired.reason, counter(expired.token), expired.changes) == ("full", "expired", 9, 9)
    assert expired.last_full_reason == "expired"
    assert len([e for e in producer.events() if isinstance(e, SiteMembershipChange)]) == 9

    (requested,) = await reader.sync_once(site="hr", full=True)
    assert (requested.mode, requested.reason, counter(requested.token)) == ("full", "requested", 9)
    ends = [e for e in producer.events() if isinstance(e, SiteSnapshotEnd)]
    assert [e.reason for e in ends] == ["requested"] * 3


class Vanishing:
    """A store whose site `gone` is listed but no longer there when read."""

    def __init__(self, store: SqlSiteStore) -> None:
        self.store = store

    def sites(self) -> list[str]:
        return ["gone", *self.store.sites()]

    def changes(self, site: str, token: str | None, limit: int = 1000):
        if site == "gone":
            raise PermanentError("no site 'gone' in the store")
        return self.store.changes(site, token, limit)

    def members(self, site: str):
        return self.store.members(site)


async def test_a_site_that_vanished_is_skipped_and_the_others_sync(store: SqlSiteStore,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    store.create_site("hr")
    store.add_member("hr", "alice")
    reader = runner(Vanishing(store), Producer(), Positions())
    assert [state.site for state in await reader.sync_once()] == ["hr"]
    assert [state.site for state in await reader.sync_once()] == ["hr"]
    assert len([r for r in caplog.records if "site skipped" in r.message]) == 1
    with pytest.raises(PermanentError):
        await reader.sync_once(site="gone")


class RefusedInMidPass(Vanishing):
    """A store whose reconnect is refused (say, its certificate is no longer trusted) between
    listing its sites and reading their changes, once `refusing`."""

    refusing = False

    def sites(self) -> list[str]:
        return self.store.sites()

    def changes(self, site: str, token: str | None, limit: int = 1000):
        if self.refusing:
            raise NeedsAttention("site store hr-db: certificate not accepted; the password was not sent")
        return self.store.changes(site, token, limit)


async def test_a_store_that_refuses_a_reconnect_in_mid_pass_needs_attention_it_skips_no_site(
    store: SqlSiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.create_site("hr")
    source = RefusedInMidPass(store)
    reader = runner(source, Producer(), Positions())
    await reader.sync_once()  # the first pass reads every site whole; the next asks for changes
    source.refusing = True
    with pytest.raises(NeedsAttention):
        await reader.sync_once()
    assert not [r for r in caplog.records if "site skipped" in r.message]


async def test_a_site_removed_from_the_store_drops_its_memberships_and_its_state(store: SqlSiteStore) -> None:
    for site in ("hr", "it"):
        store.create_site(site)
        store.add_member(site, "alice")
    producer, positions = Producer(), Positions()
    reader = runner(store, producer, positions)
    await reader.sync_once()
    producer.events()
    with store._transaction() as tx:  # the platform deletes the site collection
        tx.execute("DELETE FROM sites WHERE site_id = ?", ("it",))
    assert [state.site for state in await reader.sync_once()] == ["hr"]
    ends = producer.events()
    assert len(ends) == 3 and {(e.site, e.reason, e.members) for e in ends} == {("it", "site-removed", 0)}
    assert positions.saved[-1] is None and set(reader.states) == {"hr"}
    assert await reader.sync_once() and producer.events() == []  # once only


class Flaky:
    """A store that is down for its first `failures` calls."""

    def __init__(self, store: SqlSiteStore, failures: int) -> None:
        self.store = store
        self.failures = failures

    def sites(self) -> list[str]:
        if self.failures:
            self.failures -= 1
            raise RetriableError("sqlite site store: unable to open database file")
        return self.store.sites()

    def changes(self, site: str, token: str | None, limit: int = 1000):
        return self.store.changes(site, token, limit)

    def members(self, site: str):
        return self.store.members(site)


async def test_a_store_that_is_down_is_retried_and_reported(store: SqlSiteStore,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    store.create_site("hr")
    store.add_member("hr", "alice")
    positions = Positions()
    up = READER_UP.labels("site:intranet")
    task = asyncio.create_task(runner(Flaky(store, failures=2), Producer(), positions).run())
    seen_down = False
    try:
        while not (positions.saved and up._value.get() == 1):
            seen_down = seen_down or up._value.get() == 0
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert seen_down
    assert positions.saved[0].reason == "no-token"
    lines = [r.message for r in caplog.records if "outage" in r.message]
    assert len(lines) == 2 and "outage started component=site-reader store=intranet" in lines[0]
    assert "outage ended component=site-reader store=intranet" in lines[1]
