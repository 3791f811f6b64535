"""OpenLDAP reader that polls the accesslog database (mode ``accesslog-poll``).

Every write is one ``auditWriteObject`` entry named by its ``reqStart``.  A write that began
earlier can commit after a later one, so a plain ``reqStart >= last`` watermark misses
changes under concurrent writers (measured: 7-11 of 4,000).  Each poll therefore re-reads an
overlap window before the position and skips records it already returned; after a restart
the window is re-published and downstream drops what it has seen (same position).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from ldap3 import DEREF_NEVER, SUBTREE

from connectors.accesslog import position_at, position_minus
from connectors.ldap_scope import RECORD_ATTRIBUTES, ForestScope
from connectors.ldap_session import LdapSession
from streams.contracts import ReadBatch, RejectedRecord
from streams.topology import Forest


class AccesslogPollReader:
    mode = "accesslog-poll"

    def __init__(self, forest: Forest, *, page_size: int = 1000) -> None:
        self.forest = forest.name
        self._capture = forest.change_capture
        self._session = LdapSession(forest)
        self._scope = ForestScope(forest, self._session, page_size=page_size)
        self._page_size = page_size
        self._returned_up_to: str | None = None
        self._seen: set[str] = set()

    async def read(self, position: str | None) -> ReadBatch:
        if position is None:
            return await asyncio.to_thread(self._snapshot)
        batch = await asyncio.to_thread(self._poll, position)
        if not batch.changes and not batch.rejected:
            await asyncio.sleep(self._capture.poll_interval_seconds)
        return batch

    async def close(self) -> None:
        await asyncio.to_thread(self._session.close)

    def _poll(self, position: str) -> ReadBatch:
        if position != self._returned_up_to:
            # Not a continuation of our own last batch (start, or a retry after a failed
            # publish): what was returned before may not be durable, so forget it.
            self._seen.clear()
        since = position_minus(position, self._capture.overlap_seconds)
        records = self._search_accesslog(since)
        self._seen = {start for start in self._seen if start >= since}
        changes, rejected = [], []
        newest = position
        for start, raw in records:
            if start in self._seen:
                continue
            self._seen.add(start)
            newest = max(newest, start)
            outcome = self._scope.record_change(raw, start)
            if isinstance(outcome, RejectedRecord):
                rejected.append(outcome)
            elif outcome is not None:
                changes.append(outcome)
        self._returned_up_to = newest
        return ReadBatch(changes=tuple(changes), rejected=tuple(rejected), position=newest)

    def _search_accesslog(self, since: str) -> list[tuple[str, dict]]:
        search_filter = f"(&(objectClass=auditWriteObject)(reqResult=0)(reqStart>={since}))"
        with self._session.connection() as connection:
            entries = connection.extend.standard.paged_search(
                self._capture.accesslog_base,
                search_filter,
                search_scope=SUBTREE,
                dereference_aliases=DEREF_NEVER,
                attributes=RECORD_ATTRIBUTES,
                paged_size=self._page_size,
                generator=False,
            )
            records = [
                (entry["raw_attributes"]["reqStart"][0].decode(), dict(entry["raw_attributes"]))
                for entry in entries
                if entry.get("type") == "searchResEntry"
            ]
        records.sort(key=lambda record: record[0])
        return records

    def _snapshot(self) -> ReadBatch:
        """Every object in scope as an add, positioned where polling then starts.

        The position is taken before the search and moved back by the overlap window, so
        a change made while the search runs is read again afterwards; re-applying it is
        harmless (replace/add/delete of values are idempotent in the metaverse).
        """
        position = position_minus(position_at(datetime.now(timezone.utc)), self._capture.overlap_seconds)
        changes, rejected = self._scope.snapshot(position)
        self._returned_up_to = None
        return ReadBatch(changes=tuple(changes), rejected=tuple(rejected), position=position, is_snapshot=True)
