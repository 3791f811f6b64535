"""OpenLDAP reader that polls the accesslog database (mode ``accesslog-poll``).

Every write is one ``auditWriteObject`` entry carrying the write's CSN as its ``entryCSN``; that
is the change's position. Writes commit in another order than they arrive (their ``reqStart``),
so a watermark on arrival times skips a write still in flight (measured: 7-11 of 4,000 under
concurrent writers) and, read later, that write looks older than its successors. The reader reads
in commit order instead, bounded by the log's ``contextCSN``: the syncprov overlay on the
accesslog database advances it only once a log entry has committed, and accesslog logs one
write at a time in CSN order, so no record at or below it is still to come (measured: 4,000
modifies from 8 writers, polled this way, none missed or read twice). Each poll reads the
contextCSN C, then the records with a CSN in (position, C] in CSN order; the batch's position is
the newest CSN read. There is no overlap window to re-check and nothing is read twice. After a
snapshot the position is the log's contextCSN read before it: everything at or below it is in
the snapshot. A position stored before positions were CSNs (a reqStart) is read from the overlap
window before it (connectors.openldap.accesslog.csn_lower_bound).
"""

from __future__ import annotations

import asyncio
import logging

from ldap3 import BASE, DEREF_NEVER, SUBTREE
from ldap3.utils.conv import escape_filter_chars

from connectors.ldap.scope import RECORD_ATTRIBUTES, ForestScope
from connectors.ldap.session import LdapSession
from connectors.openldap.accesslog import csn_after, csn_lower_bound, snapshot_position
from streams.config.forests import Forest
from streams.contracts import PermanentError, ReadBatch, RejectedRecord, RetriableError

log = logging.getLogger(__name__)

# A poll reads the log a span of time at a time; the span adapts so that one read holds about
# this many records, which bounds the memory a long backlog takes.
_SPAN_RECORDS = 5000
_FIRST_SPAN_SECONDS = 1.0
_SPAN_LIMITS = (0.01, 86_400.0)


def _next_span(span: float, records: int) -> float:
    if records > _SPAN_RECORDS:
        span /= 2
    elif records < _SPAN_RECORDS / 4:
        span *= 2
    return min(max(span, _SPAN_LIMITS[0]), _SPAN_LIMITS[1])


class AccesslogPollReader:
    mode = "accesslog-poll"

    def __init__(self, forest: Forest, *, page_size: int = 1000) -> None:
        self.forest = forest.name
        self._capture = forest.change_capture
        self._session = LdapSession(forest)
        self._scope = ForestScope(forest, self._session, page_size=page_size)
        self._page_size = page_size
        self._returned_up_to: str | None = None
        self._span_seconds = _FIRST_SPAN_SECONDS

    async def read(self, position: str | None) -> ReadBatch:
        if position is None or await asyncio.to_thread(self._log_lost, position):
            return await asyncio.to_thread(self._snapshot)
        try:
            batch = await asyncio.to_thread(self._poll, position)
        except RetriableError:
            # The directory may come back restored from a backup: check the position then.
            self._returned_up_to = None
            raise
        if not batch.changes and not batch.rejected:
            await asyncio.sleep(self._capture.poll_interval_seconds)
        return batch

    async def close(self) -> None:
        await asyncio.to_thread(self._session.close)

    def _poll(self, position: str) -> ReadBatch:
        if position != self._returned_up_to:
            # Not a continuation of our own last batch (start, or a retry after a failed
            # publish): what the filter memory learnt since may not be durable.
            self._scope.forget()
        changes, rejected = [], []
        newest = position
        for csn, raw in self._records_after(position, self._committed()):
            newest = csn
            outcome = self._scope.record_change(raw, csn)
            if isinstance(outcome, RejectedRecord):
                rejected.append(outcome)
            elif outcome is not None:
                changes.append(outcome)
        self._returned_up_to = newest
        return ReadBatch(changes=tuple(self._scope.publishable(changes)), rejected=tuple(rejected), position=newest)

    def _log_lost(self, position: str) -> bool:
        """Whether the log no longer holds the record `position` names, and is not where that
        position left it either: the directory was restored from a backup taken before it (what
        was published since is undone), or the log was purged past it (changes after it may be
        gone unread). Only a snapshot is sure then. Checked when a read does not continue the
        last one. A position stored before positions were CSNs names its record by reqStart, or
        nothing if it is a snapshot's time (a whole second); a snapshot's position now (the log's
        contextCSN) may name no record, but then the log has not moved since."""
        if position == self._returned_up_to or position.endswith(".000000Z"):
            return False
        named_by = "entryCSN" if "#" in position else "reqStart"
        with self._session.connection() as connection:
            connection.search(
                self._capture.accesslog_base,
                f"({named_by}={escape_filter_chars(position)})",
                search_scope=SUBTREE,
                dereference_aliases=DEREF_NEVER,
                attributes=["1.1"],
            )
            if any(entry.get("type") == "searchResEntry" for entry in connection.response):
                return False
        if self._committed() == position:
            return False
        log.warning(
            "accesslog lacks the reader's position (restored from a backup, or purged past it?), "
            "starting over with a snapshot forest=%s position=%s",
            self.forest,
            position,
        )
        return True

    def _committed(self) -> str:
        """The log's contextCSN: no record at or below it is still to come."""
        base = self._capture.accesslog_base
        with self._session.connection() as connection:
            connection.search(
                base, "(objectClass=*)", search_scope=BASE, dereference_aliases=DEREF_NEVER, attributes=["contextCSN"]
            )
            csns = [
                bytes(value).decode("ascii", "replace")
                for entry in connection.response
                for value in entry.get("raw_attributes", {}).get("contextCSN", ())
            ]
        if not csns:
            raise PermanentError(
                f"forest {self.forest}: {base} has no contextCSN "
                "(is the syncprov overlay configured on the accesslog database?)"
            )
        # One value per server id; a single writable server has one.
        return max(csns)

    def _records_after(self, position: str, committed: str) -> list[tuple[str, dict]]:
        """The records after `position` up to `committed`, in CSN order, from the first span of
        log time after `position` that holds any, and at most _SPAN_RECORDS of them: a long
        backlog is read a bounded step at a time. The span adapts to hold about _SPAN_RECORDS
        records; an empty stretch of log is crossed with doubling spans."""
        since = csn_lower_bound(position, self._capture.overlap_seconds)
        span = self._span_seconds
        # slapd serves a CSN range by scanning the log (~20 ms per 10,000 records): an idle poll
        # reads only the suffix entry (committed is not past the position).
        while since < committed:
            upper = min(committed, csn_after(since, span))
            condition = f"(entryCSN>={escape_filter_chars(since)})(entryCSN<={escape_filter_chars(upper)})"
            # The record at the position itself was returned with the batch that ended there.
            found = sorted((r for r in self._records(condition) if r[0] != position), key=lambda record: record[0])
            if found:
                if upper < committed:  # the span, not the log's end, bounded this read
                    self._span_seconds = _next_span(span, len(found))
                # Every record up to `upper` is in hand: stopping at any of them loses none.
                return found[:_SPAN_RECORDS]
            since, span = upper, min(span * 2, _SPAN_LIMITS[1])
        return []

    def _records(self, condition: str) -> list[tuple[str, dict]]:
        """(entryCSN, raw attributes) of the successful write records matching `condition`."""
        search_filter = f"(&(objectClass=auditWriteObject)(reqResult=0){condition})"
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
            return [
                (entry["raw_attributes"]["entryCSN"][0].decode(), dict(entry["raw_attributes"]))
                for entry in entries
                if entry.get("type") == "searchResEntry"
            ]

    def _snapshot(self) -> ReadBatch:
        """Every object in scope as an add; polling goes on from the log's contextCSN read before
        the search, so a write logged during the search is read (and applied) again afterwards,
        which is harmless (replace/add/delete of values are idempotent in the metaverse)."""
        position = snapshot_position(self._capture.overlap_seconds)
        committed = self._committed()
        changes, rejected = self._scope.snapshot(position)
        self._returned_up_to = committed
        return ReadBatch(changes=tuple(changes), rejected=tuple(rejected), position=committed, is_snapshot=True)
