"""Active Directory reader on the DirSync control (mode ``ad-dirsync``).

A DirSync search with a cookie returns every object changed since that cookie, with only the
attributes that changed, and a new cookie; with an empty cookie it returns every object, which
is the reader's snapshot (the living objects in scope: tombstones are left to the sweep). The
reader's position is that cookie (base64 text), so a restart resumes exactly where the last
durable batch ended. AD accepts DirSync only at a naming-context root, so the search covers
the whole domain and results outside ``base_dn`` are dropped here. Decoding rules (adds,
deletes, renames, ranged member values, positions) are in :mod:`connectors.ad_values`.

DirSync never says where a renamed object was. The reader remembers the DN of every object in
scope, learnt from the snapshot and kept up with each batch, to turn a rename into a MOVE and
to notice objects leaving ``base_dn``. After a restart from a cookie that memory is empty; an
object renamed into scope is then read whole and published as an ADD, and one renamed out of
scope as a DELETE (harmless if it was never in scope: nothing downstream knows it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

import orjson
from ldap3 import BASE, DEREF_NEVER, SUBTREE, Connection
from ldap3.protocol.microsoft import dir_sync_control

from connectors.accesslog import attribute_value, within
from connectors.ad_values import (
    CookieError,
    DirSyncEntry,
    EntryError,
    cookie_usn,
    decode_cookie,
    encode_cookie,
    guid_filter,
    parse_entry,
    same_dn,
    to_change,
    usn_position,
)
from connectors.ldap_session import LdapSession
from streams.contracts import PermanentError, ReadBatch, RejectedRecord
from streams.events import ChangeOp, DirectoryChange
from streams.topology import Forest

log = logging.getLogger(__name__)

DIRSYNC_OID = "1.2.840.113556.1.4.841"
# The most a DC may put in one response; it says "more data" when it holds some back.
_MAX_BYTES = 2**31 - 1


class DirSyncReader:
    mode = "ad-dirsync"

    def __init__(self, forest: Forest) -> None:
        self.forest = forest.name
        self._config = forest
        self._capture = forest.change_capture
        self._session = LdapSession(forest)
        self._naming_context: str | None = None
        # object_id -> DN of every object in scope, as of the position last returned.
        self._known: dict[str, str] = {}
        # True when _known holds every object in scope (built from a snapshot in this process).
        self._complete = False
        self._returned: str | None = None

    async def read(self, position: str | None) -> ReadBatch:
        batch, entries = await asyncio.to_thread(self._read, position)
        if not entries:
            await asyncio.sleep(self._capture.poll_interval_seconds)
        return batch

    async def close(self) -> None:
        await asyncio.to_thread(self._session.close)

    def _read(self, position: str | None) -> tuple[ReadBatch, int]:
        if position is None or position != self._returned:
            # A snapshot, or not a continuation of our own last batch (start, or a retry after
            # a failed publish): what was learnt from unpublished batches must not be used.
            self._known, self._complete = {}, False
        cookie = b"" if position is None else self._cookie(position)
        known = dict(self._known)
        changes: list[DirectoryChange] = []
        rejected: list[RejectedRecord] = []
        entries = 0
        changed_at = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        with self._session.connection() as connection:
            more = True
            while more:
                page, cookie, more = self._dirsync(connection, cookie)
                page_position = usn_position(self._usn(cookie))
                entries += len(page)
                for dn, raw in page:
                    try:
                        change = self._change(
                            connection,
                            known,
                            parse_entry(dn, raw),
                            snapshot=position is None,
                            position=page_position,
                            changed_at=changed_at,
                        )
                    except EntryError as exc:
                        rejected.append(RejectedRecord(reason=str(exc), raw=_raw_json(dn, raw), position=page_position))
                        continue
                    if change is not None:
                        changes.append(change)
        if position is not None and not entries:
            self._returned = position
            return ReadBatch(changes=(), rejected=(), position=position), 0
        self._known, self._complete = known, self._complete or position is None
        self._returned = encode_cookie(cookie)
        log.log(
            logging.INFO if position is None else logging.DEBUG,
            "dirsync read forest=%s snapshot=%s entries=%d changes=%d rejected=%d usn=%d",
            self.forest, position is None, entries, len(changes), len(rejected), self._usn(cookie),
        )
        batch = ReadBatch(
            changes=tuple(changes), rejected=tuple(rejected), position=self._returned, is_snapshot=position is None
        )
        return batch, entries

    def _dirsync(self, connection: Connection, cookie: bytes) -> tuple[list[tuple[str, Mapping]], bytes, bool]:
        """One DirSync round trip: the entries, the new cookie, whether the DC holds more back."""
        connection.search(
            self._root(connection),
            "(objectClass=*)",
            search_scope=SUBTREE,
            dereference_aliases=DEREF_NEVER,
            attributes=["*"],
            controls=[
                dir_sync_control(
                    criticality=True,
                    object_security=False,
                    ancestors_first=True,
                    # Never secrets (password hashes), whatever rights the account has.
                    public_data_only=True,
                    incremental_values=True,
                    max_length=_MAX_BYTES,
                    cookie=cookie,
                )
            ],
        )
        control = (connection.result.get("controls") or {}).get(DIRSYNC_OID)
        if not control or not control.get("value"):
            raise PermanentError(f"forest {self.forest}: the server answered without a DirSync control")
        entries = [
            (entry["dn"], entry["raw_attributes"])
            for entry in connection.response
            if entry.get("type") == "searchResEntry"
        ]
        return entries, bytes(control["value"]["cookie"]), bool(control["value"]["more_results"])

    def _change(
        self,
        connection: Connection,
        known: dict[str, str],
        entry: DirSyncEntry,
        *,
        snapshot: bool,
        position: str,
        changed_at: str,
    ) -> DirectoryChange | None:
        """The entry's change as seen from inside base_dn, keeping `known` up to date."""
        base = self._config.base_dn
        previous = known.get(entry.object_id)
        common = {"position": position, "changed_at": changed_at}
        if entry.deleted:
            known.pop(entry.object_id, None)
            if snapshot:
                return None  # a snapshot lists the living; the sweep after it removes the rest
            change = to_change(self.forest, entry, previous_dn=previous, **common)
            return change if within(change.dn, base) else None
        inside = within(entry.dn, base)
        if entry.renamed and not entry.created and (previous is None or not same_dn(previous, entry.dn)):
            return self._renamed(connection, known, entry, previous, inside, common)
        if not inside:
            return None
        known[entry.object_id] = entry.dn
        return to_change(self.forest, entry, previous_dn=previous, **common)

    def _renamed(
        self,
        connection: Connection,
        known: dict[str, str],
        entry: DirSyncEntry,
        previous: str | None,
        inside: bool,
        common: dict[str, str],
    ) -> DirectoryChange | None:
        if previous is not None and inside:
            known[entry.object_id] = entry.dn
            return to_change(self.forest, entry, previous_dn=previous, **common)
        if previous is not None:
            del known[entry.object_id]
            return DirectoryChange(forest=self.forest, object_id=entry.object_id, op=ChangeOp.DELETE, dn=previous,
                                   **common)
        if inside:
            # Come into scope, or renamed while we did not follow it: its earlier history is not
            # ours, so publish it whole.
            whole = self._read_object(connection, entry.object_id)
            if whole is None:  # gone again: a later batch brings the delete or the move out
                return None
            known[entry.object_id] = whole.dn
            return to_change(self.forest, whole, **common)
        if self._complete:
            return None  # every object in scope is known, so this one never was
        return DirectoryChange(forest=self.forest, object_id=entry.object_id, op=ChangeOp.DELETE, dn=entry.dn,
                               **common)

    def _read_object(self, connection: Connection, object_id: str) -> DirSyncEntry | None:
        connection.search(
            self._config.base_dn,
            guid_filter(object_id),
            search_scope=SUBTREE,
            dereference_aliases=DEREF_NEVER,
            attributes=["*"],
        )
        found = [entry for entry in connection.response if entry.get("type") == "searchResEntry"]
        return parse_entry(found[0]["dn"], found[0]["raw_attributes"]) if found else None

    def _root(self, connection: Connection) -> str:
        """The naming context holding base_dn: the only base AD accepts for DirSync."""
        if self._naming_context is None:
            connection.search("", "(objectClass=*)", search_scope=BASE, attributes=["namingContexts"])
            contexts = [
                value.decode("utf-8")
                for entry in connection.response
                if entry.get("type") == "searchResEntry"
                for value in entry["raw_attributes"].get("namingContexts", ())
            ]
            holding = [context for context in contexts if within(self._config.base_dn, context)]
            if not holding:
                raise PermanentError(
                    f"forest {self.forest}: base_dn {self._config.base_dn!r} is in none of the server's "
                    f"naming contexts ({'; '.join(contexts)})"
                )
            self._naming_context = max(holding, key=len)
            log.info("dirsync naming context forest=%s root=%s", self.forest, self._naming_context)
        return self._naming_context

    def _cookie(self, position: str) -> bytes:
        try:
            return decode_cookie(position)
        except CookieError as exc:
            raise PermanentError(f"forest {self.forest}: stored position is not a DirSync cookie: {exc}") from None

    def _usn(self, cookie: bytes) -> int:
        try:
            return cookie_usn(cookie)
        except CookieError as exc:
            raise PermanentError(
                f"forest {self.forest}: the server's DirSync cookie is not understood: {exc}"
            ) from None


def _raw_json(dn: str, raw: Mapping[str, Sequence[bytes] | None]) -> bytes:
    """An entry as JSON for the error topic, values lossless (binary ones base64 under name;base64)."""
    attributes: dict[str, list[str]] = {}
    for name, values in raw.items():
        for value in values or ():
            key, text = attribute_value(name, bytes(value))
            attributes.setdefault(key, []).append(text)
    return orjson.dumps({"dn": dn, "attributes": attributes})
