"""Drives the membership reader of one site store: per site, publish what changed since its
stored token to the site-changes topic, then save the new token (issue #10, UP).

Same rule as the directory readers (source_runner.py): a site's SiteSyncState is saved only once
Kafka acknowledged every record before its token, so a restart (even after kill -9) resumes at or
before the first change not yet published; what is published twice, downstream applies twice
harmlessly (a membership is a latest state).

Per site, a pass is either
- incremental: the changes after the stored token, page by page until caught up, or
- full: when there is no token, the token expired (the store's change log no longer reaches back
  to it), the store was restored from a backup (the token is ahead of the store), or a person
  asked for it (``requested``). Every member is published as ADDED under one snapshot id, then a
  SiteSnapshotEnd on every partition, after which the login stage drops the site's memberships the
  read did not publish.

A store that is down (RetriableError) is an outage: one log line when it starts and one when it
ends, the reader's up gauge and outage counter (labelled ``site:<store>``), retries with backoff.
Each store has its own runner (its own worker component), so the others and the GAL flow go on.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.config.topology import Topics
from streams.contracts import NeedsAttention, PermanentError, RetriableError, SiteChangeBatch, SiteSource
from streams.kafka.site_positions import SitePositionStore
from streams.monitoring.backoff import Backoff
from streams.monitoring.metrics import CHANGES_PUBLISHED, POSITION_SAVED, READER_OUTAGES, READER_UP, STAGE_RECORDS
from streams.monitoring.outages import Outage
from streams.site_events import MembershipOp, SiteMembershipChange, SiteSnapshotEnd, SiteSyncState, SyncMode

log = logging.getLogger(__name__)

# Changes asked of the store at once; a site with more pages on until caught up.
PAGE_SIZE = 1000
# SiteSnapshotEnd goes to every partition explicitly; its key only has to be no login's key.
SNAPSHOT_END_KEY = b"site-snapshot-end"
# The reason of an incremental pass, and of a full read a person asked for.
CHANGES = "changes"
REQUESTED = "requested"
# The reason of the snapshot end that drops the memberships of a site the store no longer has.
SITE_REMOVED = "site-removed"
# How often a store that refuses the reader for a reason only a person can mend is tried again.
ATTENTION_RETRY_SECONDS = 60.0


def reader_label(store: str) -> str:
    """The `forest` label of the reader metrics for a site store's reader."""
    return f"site:{store}"


def next_state(stored: SiteSyncState | None, *, store: str, site: str, token: str, mode: SyncMode, reason: str,
               at: str, changes: int) -> SiteSyncState:
    """The state to save after a pass; the last full read's time and reason carry over an
    incremental one."""
    full = mode is SyncMode.FULL
    return SiteSyncState(
        store=store, site=site, token=token, mode=str(mode), reason=reason, at=at, changes=changes,
        last_full_at=at if full else (stored.last_full_at if stored else None),
        last_full_reason=reason if full else (stored.last_full_reason if stored else None),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _ignore_outcome(acks: asyncio.Future) -> None:
    """For sends given up after a failure: they are sent again from the stored token, so how they
    ended does not matter (retrieving the error keeps asyncio from reporting it)."""
    if not acks.cancelled():
        acks.exception()


class _Sends:
    """Records queued for Kafka in order, and the wait for all their acknowledgements."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._acks: list[asyncio.Future] = []

    async def send(self, key: bytes, value: bytes, *, partition: int | None = None) -> None:
        self._acks.append(await self._producer.send(self._topic, key=key, value=value, partition=partition))

    async def acknowledged(self) -> None:
        """Returns once Kafka acknowledged every record queued; raises if it refused any."""
        acks, self._acks = self._acks, []
        try:
            await asyncio.gather(*acks)
        except BaseException:
            for ack in acks:
                ack.add_done_callback(_ignore_outcome)
            raise

    def abandon(self) -> None:
        for ack in self._acks:
            ack.add_done_callback(_ignore_outcome)
        self._acks = []


class SiteReaderRunner:
    def __init__(self, source: SiteSource, *, store: str, producer: AIOKafkaProducer, topics: Topics,
                 partitions: int | None, positions: SitePositionStore, poll_interval: float) -> None:
        """`partitions`: how many partitions the site-changes topic has (every one of them gets a
        snapshot end); None asks the producer's metadata."""
        self._source = source
        self._store = store
        self._producer = producer
        self._topic = topics.site_changes
        self._partitions = partitions
        self._positions = positions
        self._poll_interval = poll_interval
        label = reader_label(store)
        self._label = label
        self._outage = Outage(f"component=site-reader store={store}", up=READER_UP.labels(label),
                              outages=READER_OUTAGES.labels(label), backoff=Backoff(first=0.5, cap=30.0))
        # Loaded from the positions topic on the first pass, then kept: this runner saves them.
        self._states: dict[str, SiteSyncState] | None = None
        # Sites whose last pass failed for good (logged once, not at every poll).
        self._failing: set[str] = set()

    @property
    def states(self) -> dict[str, SiteSyncState]:
        """The state of each site as last loaded or saved."""
        return dict(self._states or {})

    async def run(self) -> None:
        """Poll every site of the store for ever."""
        while True:
            try:
                await self.sync_once()
            except (RetriableError, KafkaError) as exc:
                await asyncio.sleep(self._outage.failed(exc))
                continue
            except PermanentError as exc:
                # The store refuses the reader itself (not one site): only a person can mend it.
                delay = max(self._outage.failed(exc), ATTENTION_RETRY_SECONDS)
                log.error("site reader needs attention store=%s error=%r retry_in=%.0fs", self._store, str(exc), delay)
                await asyncio.sleep(delay)
                continue
            self._outage.succeeded()
            await asyncio.sleep(self._poll_interval)

    async def sync_once(self, *, site: str | None = None, full: bool = False) -> list[SiteSyncState]:
        """One pass over the store's sites (or only `site`); with `full`, every site read whole
        (reason ``requested``). Returns the state of each site synced: saved by this pass, or the
        stored one when nothing had changed. A site that fails for good (it vanished) is logged
        and skipped, unless it was asked for by name: then its PermanentError is raised. Raises
        RetriableError when the store is down, KafkaError when Kafka is."""
        if self._states is None:
            self._states = await self._positions.load_all(self._store)
        sites = [site] if site is not None else await asyncio.to_thread(self._source.sites)
        if site is None:
            for removed in sorted(set(self._states) - set(sites)):
                await self._site_removed(removed)
        synced = []
        for name in sites:
            try:
                synced.append(await self._sync_site(name, full=full))
            except PermanentError as exc:
                # NeedsAttention is the store refusing the connection (a reconnect in mid-pass), not this site.
                if site is not None or isinstance(exc, NeedsAttention):
                    raise
                if name not in self._failing:
                    log.warning("site skipped store=%s site=%s error=%r", self._store, name, str(exc))
                self._failing.add(name)
                continue
            if name in self._failing:
                self._failing.discard(name)
                log.info("site readable again store=%s site=%s", self._store, name)
        return synced

    async def _sync_site(self, site: str, *, full: bool) -> SiteSyncState:
        assert self._states is not None
        stored = self._states.get(site)
        if full:
            return await self._full_read(site, REQUESTED, stored)
        batch = await self._changes(site, stored.token if stored else None)
        if batch.full_read_needed is not None:
            return await self._full_read(site, str(batch.full_read_needed), stored)
        assert stored is not None  # a site with no token always needs a full read
        sends, published = _Sends(self._producer, self._topic), 0
        try:
            while True:
                for change in batch.changes:
                    change = replace(change, store=self._store)
                    await sends.send(change.key(), change.to_bytes())
                published += len(batch.changes)
                token = batch.token
                if len(batch.changes) < PAGE_SIZE:
                    break
                batch = await self._changes(site, token)
                if batch.full_read_needed is not None:
                    # The log's retention overtook the pages read: the full read supersedes them.
                    await sends.acknowledged()
                    return await self._full_read(site, str(batch.full_read_needed), stored)
            await sends.acknowledged()
        finally:
            sends.abandon()
        if not published:
            return stored
        self._count(published)
        state = next_state(stored, store=self._store, site=site, token=token, mode=SyncMode.INCREMENTAL,
                           reason=CHANGES, at=_now(), changes=published)
        await self._save(state)
        log.info("site changes published store=%s site=%s changes=%d token=%s", self._store, site, published, token)
        return state

    async def _full_read(self, site: str, reason: str, stored: SiteSyncState | None) -> SiteSyncState:
        members, token = await asyncio.to_thread(self._source.members, site)
        snapshot_id, now = uuid.uuid4().hex, _now()
        sends = _Sends(self._producer, self._topic)
        try:
            for member in members:
                change = SiteMembershipChange(
                    site=site, member_login=member.login, op=MembershipOp.ADDED, change_token=token, changed_at=now,
                    properties=dict(member.properties), store=self._store, snapshot_id=snapshot_id,
                )
                await sends.send(change.key(), change.to_bytes())
            # After the members on each partition (a producer keeps each partition's order): the
            # login stage drops what this read did not publish only once it has seen all of it.
            end = SiteSnapshotEnd(store=self._store, site=site, snapshot_id=snapshot_id, token=token, reason=reason,
                                  members=len(members))
            for partition in await self._all_partitions():
                await sends.send(SNAPSHOT_END_KEY, end.to_bytes(), partition=partition)
            await sends.acknowledged()
        finally:
            sends.abandon()
        self._count(len(members))
        state = next_state(stored, store=self._store, site=site, token=token, mode=SyncMode.FULL, reason=reason,
                           at=now, changes=len(members))
        await self._save(state)
        log.info("site full read store=%s site=%s reason=%s members=%d token=%s snapshot=%s",
                 self._store, site, reason, len(members), token, snapshot_id)
        return state

    async def _site_removed(self, site: str) -> None:
        """A site the store no longer has (its collection was deleted): a snapshot end that no
        membership matches drops all of them downstream, so nothing is written to it any more;
        then its state goes (a site created again under that id starts with a full read)."""
        assert self._states is not None
        end = SiteSnapshotEnd(store=self._store, site=site, snapshot_id=f"removed-{uuid.uuid4().hex}",
                              token=self._states[site].token, reason=SITE_REMOVED, members=0)
        sends = _Sends(self._producer, self._topic)
        try:
            for partition in await self._all_partitions():
                await sends.send(SNAPSHOT_END_KEY, end.to_bytes(), partition=partition)
            await sends.acknowledged()
        finally:
            sends.abandon()
        await self._positions.forget(self._store, site)
        del self._states[site]
        log.warning("site removed from the store store=%s site=%s: its memberships are dropped, nothing is "
                    "written to it any more", self._store, site)

    async def _changes(self, site: str, token: str | None) -> SiteChangeBatch:
        return await asyncio.to_thread(self._source.changes, site, token, PAGE_SIZE)

    async def _all_partitions(self) -> list[int]:
        if self._partitions is not None:
            return list(range(self._partitions))
        return sorted(await self._producer.partitions_for(self._topic))

    async def _save(self, state: SiteSyncState) -> None:
        assert self._states is not None
        await self._positions.save(state)
        self._states[state.site] = state
        POSITION_SAVED.labels(self._label).set_to_current_time()

    def _count(self, records: int) -> None:
        CHANGES_PUBLISHED.labels(self._label).inc(records)
        STAGE_RECORDS.labels("site-reader").inc(records)
