"""Active Directory reader polling ``uSNChanged`` (mode ``ad-usn-poll``).

For forests whose sync account lacks the Replicating Directory Changes right that DirSync needs:
any authenticated account can read ``uSNChanged``, the DC-local number of an object's latest
change. Each read asks the naming context for the objects whose ``uSNChanged`` is above the
position and publishes each one whole, as its latest state; deleted objects are found in the
Deleted Objects container, which only the Show Deleted control makes visible. Decoding is shared
with the DirSync reader (:mod:`connectors.ad.values`), and so is the memory of DNs that turns
renames into MOVEs and moves across ``base_dn`` into ADDs and DELETEs (:mod:`connectors.ad.scope`).

What this mode does not carry: intermediate states (two changes between polls are one event)
and membership deltas. A group's event holds its whole ``member`` list, which the metaverse's
ADD replaces; the result is the same, only the stream says "these are the members" rather than
"this member joined".

Positions are USNs, zero-padded to 20 digits so that they sort as text. Every read first takes
the DC's ``highestCommittedUSN`` and searches no higher: a change committed after that has a
higher USN and is left to the next read, in both searches alike, so a change made between the
search for living objects and the search for tombstones cannot be skipped by the other one's
higher position. The reader relies on the DC handing out USNs in commit order, as AD's own
replication high-water marks do (Samba serialises its writes).

A backlog is read a window of USNs at a time. While one window is decoded and published, the
next is searched on a second connection (the DC's search is most of the time a backlog takes);
that window is used only by the read that continues from the position the last one returned,
and ends at the highest USN that read took, so it sees what a read made then would have seen.

After a restart the memory of DNs is empty: an object found outside ``base_dn`` is taken as
moved out (a DELETE) only if its ``replPropertyMetaData`` says its ``name`` changed since the
position (AD updates that on every rename and move), so mere changes outside stay silent.

A value list longer than the DC's MaxValRange (the ``member`` of a big group) comes in ranges:
``member;range=0-1499``, then the reader asks for ``member;range=1500-*`` and on until ``*``. It
asks by objectGUID, so a group renamed meanwhile is still found; one deleted meanwhile is left
out (its tombstone has a higher USN: a later read brings the DELETE). Values changed between two
ranges can make the list inconsistent for a moment only: the change raised the group's
uSNChanged, so a later read publishes it whole again. ldap3 would fetch ranges itself, but by
DN and without this handling, so the reader turns that off for its own searches.

Limits: USNs belong to one DC, so ``url`` must always reach the same DC; after pointing it at
another one, run a full import.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from ldap3 import BASE, DEREF_NEVER, LEVEL, SUBTREE, Connection
from ldap3.protocol.microsoft import show_deleted_control

from connectors.ad.scope import FilterSearch, ScopeBatch, ScopeMemory, naming_context, raw_json
from connectors.ad.values import (
    DirSyncEntry,
    EntryError,
    ValueRange,
    entry_usn,
    guid_filter,
    latest_state,
    parse_entry,
    rdn_usn,
    usn_position,
    value_range,
)
from connectors.ldap.session import LdapSession
from streams.config.forests import Forest
from streams.contracts import PermanentError, ReadBatch, RejectedRecord
from streams.events import DirectoryChange

log = logging.getLogger(__name__)

_PAGE_SIZE = 500
# The most USNs one read covers: each change takes at least one, so a batch stays bounded after
# a long outage without the server-side sort Samba does not offer; and small enough that while a
# backlog's window is decoded and published, the DC searches the next one (_read_ahead).
_USN_WINDOW = 1000
# uSNChanged and replPropertyMetaData are not in every server's "*".
_ATTRIBUTES = ["*", "uSNChanged", "replPropertyMetaData"]


@dataclass(frozen=True, slots=True)
class _Found:
    dn: str
    raw: Mapping[str, Sequence[bytes] | None]


@dataclass(frozen=True, slots=True)
class _Window:
    """The entries changed in USNs low..high, read when the DC's highest committed USN was `highest`."""

    found: list[_Found]
    low: int
    high: int
    highest: int


class UsnPollReader:
    mode = "ad-usn-poll"

    def __init__(self, forest: Forest) -> None:
        self.forest = forest.name
        self._config = forest
        self._capture = forest.change_capture
        self._session = LdapSession(forest)
        # The next USN window is searched while the reader decodes the last one (_read_ahead).
        self._ahead_session = LdapSession(forest)
        self._reading_ahead: ThreadPoolExecutor | None = None
        self._ahead: tuple[str, Future[_Window]] | None = None
        self._naming_context: str | None = None
        self._scope = ScopeMemory(forest.name, forest.base_dn, filtered=forest.filter is not None)
        # Every attribute name this reader has published: a MOVE clears those its entry lacks.
        # Only ever grows, so a retried batch still finds a superset of what the metaverse holds.
        self._published: set[str] = set()

    async def read(self, position: str | None) -> ReadBatch:
        batch, entries = await asyncio.to_thread(self._read, position)
        if not entries:
            await asyncio.sleep(self._capture.poll_interval_seconds)
        return batch

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._drop_read_ahead()
        pool, self._reading_ahead = self._reading_ahead, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._ahead_session.close()
        self._session.close()

    def _read(self, position: str | None) -> tuple[ReadBatch, int]:
        scope = self._scope.begin(position)
        window = self._read_ahead_from(position)
        with self._session.connection() as connection, _ranges_left_to_us(connection):
            root = self._root(connection)
            if window is None:
                # Read before searching. For a snapshot this is its position: a change committed
                # during the search has a higher USN, so the first poll reads it again (the snapshot
                # may already hold it: the same state at the same position, which the metaverse
                # drops), and an object deleted during the search leaves a tombstone above it.
                # Nothing falls between.
                highest = self._highest_usn(connection)
                if position is None:
                    found = list(self._search(connection, self._config.base_dn, "(objectClass=*)"))
                    window = _Window(self._whole(connection, root, found), low=0, high=highest, highest=highest)
                else:
                    window = self._window(connection, root, self._usn(position) + 1, highest)
        found, low, high, highest = window.found, window.low, window.high, window.highest
        if position is not None and not found:
            self._scope.returned(position)
            return ReadBatch(changes=(), rejected=(), position=position), 0
        ahead = self._read_ahead(root, high + 1, highest) if position is not None and high < highest else None
        try:
            changes, rejected, top = self._decode(scope, found, since=low, ceiling=high)
            with self._session.connection() as connection:
                changes = scope.filtered(changes, FilterSearch(connection, self._config))
        except BaseException:
            if ahead is not None:
                ahead.cancel()
            raise
        # An object entering scope is published whole: what a later MOVE must be able to clear.
        self._published.update(name.lower() for change in changes for name in change.attributes)
        # A snapshot covers every change up to the USN read before it; a poll, what it returned.
        returned = usn_position(highest if position is None else top)
        self._scope.returned(returned, scope)
        if ahead is not None:
            self._ahead = (returned, ahead)
        log.log(
            logging.INFO if position is None else logging.DEBUG,
            "usn poll read forest=%s snapshot=%s entries=%d changes=%d rejected=%d usn=%s highest=%d",
            self.forest, position is None, len(found), len(changes), len(rejected), returned, highest,
        )
        batch = ReadBatch(
            changes=tuple(changes), rejected=tuple(rejected), position=returned, is_snapshot=position is None
        )
        return batch, len(found)

    def _window(self, connection: Connection, root: str, low: int, highest: int) -> _Window:
        found, high = self._changed(connection, root, low, highest)
        return _Window(self._whole(connection, root, found), low=low, high=high, highest=highest)

    def _whole(self, connection: Connection, root: str, found: list[_Found]) -> list[_Found]:
        return [whole for item in found if (whole := self._all_values(connection, root, item)) is not None]

    def _read_ahead(self, root: str, low: int, highest: int) -> Future[_Window]:
        """The next window, searched on a connection of its own while this one is decoded and
        published: the DC's search is most of a backlog's time, and it runs in the DC's process."""

        def window() -> _Window:
            with self._ahead_session.connection() as connection, _ranges_left_to_us(connection):
                return self._window(connection, root, low, highest)

        if self._reading_ahead is None:
            self._reading_ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"usn-read-ahead-{self.forest}")
        return self._reading_ahead.submit(window)

    def _read_ahead_from(self, position: str | None) -> _Window | None:
        """The window read ahead, if it continues from `position`: the read that returned
        `position` covered every USN up to that window (none of them holds an entry above the
        position), and the window stops at the highest USN read then, as that read did."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        continues_from, future = ahead
        if position != continues_from:
            future.cancel()
            return None
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - the read is made again, on the reader's own connection
            log.debug("usn poll read ahead failed forest=%s reason=%r", self.forest, str(exc))
            return None

    def _drop_read_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead[1].cancel()

    def _changed(self, connection: Connection, root: str, low: int, highest: int) -> tuple[list[_Found], int]:
        """Living and deleted objects changed in the first USN window from `low` that has any,
        and the window's upper bound."""
        found: list[_Found] = []
        high = low - 1
        while not found and low <= highest:
            high = min(highest, low + _USN_WINDOW - 1)
            bounds = f"(uSNChanged>={low})(uSNChanged<={high})"
            found = [
                *self._search(connection, root, f"(&(objectClass=*){bounds})"),
                # One level: tombstones are flattened into the container, itself marked deleted.
                *self._search(
                    connection, f"CN=Deleted Objects,{root}", f"(&(isDeleted=TRUE){bounds})", deleted=True
                ),
            ]
            low = high + 1
        return found, high

    def _decode(
        self, scope: ScopeBatch, found: list[_Found], *, since: int, ceiling: int
    ) -> tuple[list[DirectoryChange], list[RejectedRecord], int]:
        """The events of the entries in USN order, the rejected ones, and the highest USN seen."""
        changed_at = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        changes: list[DirectoryChange] = []
        rejected: list[RejectedRecord] = []
        ordered: list[tuple[int, DirSyncEntry]] = []
        top = 0
        for item in found:
            try:
                entry = parse_entry(item.dn, item.raw)
                ordered.append((entry_usn(entry), entry))
            except EntryError as exc:
                # Matched by a uSNChanged filter capped at the ceiling, so at most that.
                rejected.append(RejectedRecord(reason=str(exc), raw=raw_json(item.dn, item.raw),
                                               position=usn_position(ceiling)))
                top = ceiling
        for usn, entry in sorted(ordered, key=lambda pair: pair[0]):
            top = max(top, usn)
            try:
                change = self._change(scope, entry, usn_position(usn), since=since, changed_at=changed_at)
            except EntryError as exc:
                rejected.append(
                    RejectedRecord(reason=str(exc), raw=raw_json(entry.dn, entry.raw), position=usn_position(usn))
                )
                continue
            if change is not None:
                changes.append(change)
        return changes, rejected, top

    def _change(
        self, scope: ScopeBatch, entry: DirSyncEntry, position: str, *, since: int, changed_at: str
    ) -> DirectoryChange | None:
        def publish(whole: DirSyncEntry, previous: str | None) -> DirectoryChange:
            change = latest_state(
                self.forest, whole, position=position, changed_at=changed_at, previous_dn=previous,
                published=self._published,
            )
            self._published.update(name.lower() for name in change.attributes)
            return change

        renamed_at = rdn_usn(entry)
        return scope.change(
            entry,
            # Without the metadata, assume a rename: the cost is a harmless DELETE.
            renamed=not scope.snapshot and (renamed_at is None or renamed_at >= since),
            publish=publish,
            whole=lambda: entry,  # the search returned it whole already
            position=position,
            changed_at=changed_at,
        )

    def _search(
        self, connection: Connection, base: str, ldap_filter: str, *, deleted: bool = False
    ) -> Iterator[_Found]:
        """Paged; `deleted`: the tombstones directly below `base` (the Deleted Objects container)."""
        entries = connection.extend.standard.paged_search(
            base,
            ldap_filter,
            search_scope=LEVEL if deleted else SUBTREE,
            dereference_aliases=DEREF_NEVER,
            attributes=_ATTRIBUTES,
            controls=[show_deleted_control(criticality=True)] if deleted else None,
            paged_size=_PAGE_SIZE,
            generator=True,
        )
        for entry in entries:
            if entry.get("type") == "searchResEntry":
                yield _Found(entry["dn"], entry["raw_attributes"])

    def _all_values(self, connection: Connection, root: str, item: _Found) -> _Found | None:
        """The entry with every value of the attributes the DC handed out in ranges; None when
        the object is gone before its next range was read."""
        ranged = [key for key in item.raw if ";" in key and value_range(key) is not None]
        if not ranged:
            return item
        try:
            by_guid = guid_filter(parse_entry(item.dn, item.raw).object_id)
        except EntryError:
            return item  # no GUID to fetch by: decoding rejects the entry
        raw = dict(item.raw)
        for key in ranged:
            part, values = value_range(key), list(raw.pop(key) or ())
            while part.high is not None:
                found = self._next_range(connection, root, by_guid, part.next_request())
                if found is None:
                    return None
                part, more = found
                values += more
            raw[part.attribute] = values
        return _Found(item.dn, raw)

    def _next_range(
        self, connection: Connection, root: str, by_guid: str, request: str
    ) -> tuple[ValueRange, list[bytes]] | None:
        """The part of the values `request` asks for (the rest of a list that shrank meanwhile may
        be empty); None when no object has this GUID any more."""
        connection.search(
            root,
            by_guid,
            search_scope=SUBTREE,
            dereference_aliases=DEREF_NEVER,
            attributes=[request],
        )
        found = [entry for entry in connection.response if entry.get("type") == "searchResEntry"]
        if not found:
            return None
        attribute = request.split(";", 1)[0]
        for key, values in found[0]["raw_attributes"].items():
            part = value_range(key)
            if part is not None and part.attribute.lower() == attribute.lower():
                return part, list(values or ())
        return ValueRange(attribute, 0, None), []

    def _highest_usn(self, connection: Connection) -> int:
        connection.search("", "(objectClass=*)", search_scope=BASE, attributes=["highestCommittedUSN"])
        values = [
            value
            for entry in connection.response
            if entry.get("type") == "searchResEntry"
            for value in entry["raw_attributes"].get("highestCommittedUSN", ())
        ]
        if len(values) != 1 or not bytes(values[0]).isdigit():
            raise PermanentError(f"forest {self.forest}: the rootDSE has no highestCommittedUSN ({values!r})")
        return int(values[0])

    def _root(self, connection: Connection) -> str:
        """The naming context holding base_dn: searched whole, to see objects leave base_dn."""
        if self._naming_context is None:
            self._naming_context = naming_context(connection, self.forest, self._config.base_dn)
            log.info("usn poll naming context forest=%s root=%s", self.forest, self._naming_context)
        return self._naming_context

    def _usn(self, position: str) -> int:
        if not position.isdigit():
            raise PermanentError(f"forest {self.forest}: stored position {position!r} is not a USN")
        return int(position)


@contextmanager
def _ranges_left_to_us(connection: Connection) -> Iterator[None]:
    """ldap3 leaves ranged values alone inside the block (see the module docstring). Without its
    auto ranges it must not add empty lists for requested attributes either: it would then delete
    the plain name of each ranged one, and fail where there is none."""
    saved = connection.auto_range, connection.empty_attributes
    connection.auto_range = connection.empty_attributes = False
    try:
        yield
    finally:
        connection.auto_range, connection.empty_attributes = saved
