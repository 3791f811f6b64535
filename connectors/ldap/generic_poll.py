"""Any LDAP server, polled for the entries changed since a watermark (mode ``generic-poll``).

The weakest change-capture mode, for directories that offer neither a change log nor a
change feed:

- Latest state only: each changed entry is published whole, as an add (an add replaces the
  metaverse's state), so several changes between two polls collapse into one and a rename or
  move shows as the entry under its new DN (same entryUUID).
- No deletes: a deleted entry just stops matching. Every ``reconcile_interval_seconds`` the
  reader returns a full snapshot instead of a poll, and the metaverse sweeps what it lacks,
  so a delete (or a move out of base_dn) reaches the contacts within that interval.
- Entries below a subtree moved into base_dn keep their change stamps (only the moved entry
  gets a new one): they appear at the next reconcile.
- A directory restored from a backup: polls see nothing of what the restore undid (restored
  entries keep their older stamps, so nothing published goes backwards); the first reconcile
  read more than ``overlap_seconds`` after the undone writes carries the restored state, newer
  than theirs, and the sweep removes the objects it lacks.
- With a forest filter, snapshots read only matching entries, and polls still read every changed
  entry so that one that stopped matching is published as a DELETE (:mod:`connectors.ldap.scope_filter`).

The stamp is ``entryCSN`` when the server keeps it (OpenLDAP does), else ``modifyTimestamp``.
entryCSN has microseconds plus a per-write counter, so it is unique per write and is the
change's position as it stands. modifyTimestamp has 1 s resolution: two writes to one entry
within a second share it, so the reader also compares the entry's content, and a change's
position is its stamp plus the moment the reader saw it, to order such twins.

Either stamp is taken when a write starts, and writes commit out of order, so every poll
re-reads an overlap window (``overlap_seconds``) before the watermark and skips the entries it
already returned with the same version: a quiet directory publishes nothing. After a restart
the window is published again; the metaverse drops what it has (same or older position).

The reader's position is ``<watermark>|<time of the last reconcile>``, so the reconcile
schedule survives restarts. As with the accesslog readers, a snapshot's watermark comes from
this host's clock: the directory's clock must be within ``overlap_seconds`` of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson
from ldap3 import BASE, DEREF_NEVER, SUBTREE

from connectors.ldap.scope import ForestScope, raw_json
from connectors.ldap.session import LdapSession
from connectors.ldap.values import RecordError, position_at, position_minus
from streams.config.forests import Forest
from streams.contracts import ReadBatch, RejectedRecord
from streams.events import DirectoryChange

log = logging.getLogger(__name__)

ENTRY_CSN = "entryCSN"
MODIFY_TIMESTAMP = "modifyTimestamp"
# slapd evaluates an entryCSN filter whose value is not a whole CSN as Undefined: no match, no error.
_CSN_TAIL = "#000000#000#000000"
_SEPARATOR = "|"


def normalized_stamp(attribute: str, value: str) -> str:
    """A stamp in the form positions compare in: ``YYYYmmddHHMMSS.ffffffZ[#...]``."""
    if attribute == ENTRY_CSN:
        return value
    return f"{value[:14]}.000000Z"


def since_filter(attribute: str, since: str) -> str:
    """Entries whose stamp is at or after `since` (a normalized stamp)."""
    if attribute == ENTRY_CSN:
        return f"({ENTRY_CSN}>={since[:22]}{_CSN_TAIL})"
    return f"({MODIFY_TIMESTAMP}>={since[:14]}Z)"


def entry_version(attribute: str, stamp: str, raw_attributes: dict) -> str:
    """What tells one state of an entry from the next: its CSN, or its second plus its content."""
    if attribute == ENTRY_CSN:
        return stamp
    content = orjson.dumps(
        {name: sorted(bytes(v).hex() for v in values) for name, values in raw_attributes.items()},
        option=orjson.OPT_SORT_KEYS,
    )
    return f"{stamp}#{hashlib.sha256(content).hexdigest()}"


def change_position(attribute: str, stamp: str, seen_at: datetime) -> str:
    if attribute == ENTRY_CSN:
        return stamp
    return f"{stamp}#{seen_at.astimezone(timezone.utc):%Y%m%d%H%M%S.%fZ}"


@dataclass(frozen=True, slots=True)
class PollPosition:
    watermark: str
    # When the last full snapshot was read (this host's clock); None: one is due now.
    reconciled: str | None

    @classmethod
    def parse(cls, position: str) -> PollPosition:
        watermark, _, reconciled = position.partition(_SEPARATOR)
        return cls(watermark, reconciled or None)

    def __str__(self) -> str:
        return f"{self.watermark}{_SEPARATOR}{self.reconciled or ''}"

    def reconcile_due(self, now: datetime, interval_seconds: float) -> bool:
        return self.reconciled is None or position_minus(position_at(now), interval_seconds) >= self.reconciled


class GenericPollReader:
    mode = "generic-poll"

    def __init__(self, forest: Forest, *, page_size: int = 1000) -> None:
        self.forest = forest.name
        self._base_dn = forest.base_dn
        self._capture = forest.change_capture
        self._session = LdapSession(forest)
        self._scope = ForestScope(forest, self._session, page_size=page_size)
        self._page_size = page_size
        self._stamp_attribute: str | None = None
        self._returned_up_to: str | None = None
        # entryUUID -> version (which starts with the stamp) returned within the overlap window.
        self._seen: dict[str, str] = {}

    async def read(self, position: str | None) -> ReadBatch:
        now = datetime.now(timezone.utc)
        if position is None:
            return await asyncio.to_thread(self._snapshot, None, now)
        current = PollPosition.parse(position)
        if current.reconcile_due(now, self._capture.reconcile_interval_seconds):
            return await asyncio.to_thread(self._snapshot, current.watermark, now)
        batch = await asyncio.to_thread(self._poll, position, current)
        if not batch.changes and not batch.rejected:
            await asyncio.sleep(self._capture.poll_interval_seconds)
        return batch

    async def close(self) -> None:
        await asyncio.to_thread(self._session.close)

    def _snapshot(self, watermark: str | None, now: datetime) -> ReadBatch:
        """Every object in scope, positioned before the search began (minus the overlap) so that
        a write made meanwhile is polled again afterwards."""
        position = position_minus(position_at(now), self._capture.overlap_seconds)
        changes, rejected = self._scope.snapshot(position)
        resume = PollPosition(max(position, watermark or position), position_at(now))
        self._returned_up_to = str(resume)
        return ReadBatch(changes=tuple(changes), rejected=tuple(rejected), position=str(resume), is_snapshot=True)

    def _poll(self, position: str, current: PollPosition) -> ReadBatch:
        if position != self._returned_up_to:
            # A start, or a retry after a failed publish: what was returned may not be durable.
            self._seen.clear()
            self._scope.forget()
        attribute = self._stamp()
        since = position_minus(current.watermark, self._capture.overlap_seconds)
        self._seen = {key: version for key, version in self._seen.items() if version >= since}
        seen_at = datetime.now(timezone.utc)
        changes: list[DirectoryChange] = []
        rejected: list[RejectedRecord] = []
        watermark = current.watermark
        for stamp, entry in sorted(self._changed_since(attribute, since), key=lambda found: found[0]):
            watermark = max(watermark, stamp)
            version = entry_version(attribute, stamp, entry["raw_attributes"])
            # An entry without entryUUID is rejected; its DN keeps it from being rejected every poll.
            key = (entry["raw_attributes"].get("entryUUID") or [entry["dn"].encode()])[0].decode()
            if self._seen.get(key) == version:
                continue
            try:
                changes.append(self._scope.entry_change(entry, change_position(attribute, stamp, seen_at)))
            except RecordError as exc:
                rejected.append(RejectedRecord(reason=str(exc), raw=raw_json(entry["raw_attributes"]), position=stamp))
            self._seen[key] = version
        changes = self._scope.publishable(changes)
        resume = str(PollPosition(watermark, current.reconciled))
        self._returned_up_to = resume
        return ReadBatch(changes=tuple(changes), rejected=tuple(rejected), position=resume)

    def _changed_since(self, attribute: str, since: str) -> list[tuple[str, dict]]:
        """(normalized stamp, entry without its stamp attribute) of the entries changed since `since`."""
        with self._session.connection() as connection:
            entries = connection.extend.standard.paged_search(
                self._base_dn,
                since_filter(attribute, since),
                search_scope=SUBTREE,
                dereference_aliases=DEREF_NEVER,
                attributes=[*self._scope.entry_attributes, attribute],
                paged_size=self._page_size,
                generator=False,
            )
        found = []
        for entry in entries:
            if entry.get("type") != "searchResEntry":
                continue
            # The stamp is not part of the object's state: snapshots do not carry it either.
            raw = {name: values for name, values in entry["raw_attributes"].items() if name.lower() != attribute.lower()}
            value = next(v for name, v in entry["raw_attributes"].items() if name.lower() == attribute.lower())[0]
            found.append((normalized_stamp(attribute, value.decode()), {"dn": entry["dn"], "raw_attributes": raw}))
        return found

    def _stamp(self) -> str:
        """entryCSN if base_dn carries one, else modifyTimestamp; asked once per reader."""
        if self._stamp_attribute is None:
            with self._session.connection() as connection:
                connection.search(
                    self._base_dn,
                    "(objectClass=*)",
                    search_scope=BASE,
                    dereference_aliases=DEREF_NEVER,
                    attributes=[ENTRY_CSN],
                )
                has_csn = any(e.get("raw_attributes", {}).get(ENTRY_CSN) for e in connection.response)
            self._stamp_attribute = ENTRY_CSN if has_csn else MODIFY_TIMESTAMP
            log.info("generic poll stamp forest=%s attribute=%s", self.forest, self._stamp_attribute)
        return self._stamp_attribute
