"""Active Directory reader on the DirSync control (mode ``ad-dirsync``).

A DirSync search with a cookie returns every object changed since that cookie, with only the
attributes that changed, and a new cookie; with an empty cookie it returns every object, which
is the reader's snapshot (the living objects in scope: tombstones are left to the sweep). The
reader's position is that cookie (base64 text), so a restart resumes exactly where the last
durable batch ended. AD accepts DirSync only at a naming-context root, so the search covers
the whole domain and results outside ``base_dn`` are dropped here. Decoding rules (adds,
deletes, renames, ranged member values, positions) are in :mod:`connectors.ad.values`; how
renames and moves across ``base_dn`` are told apart, in :mod:`connectors.ad.scope`. With
``wake_on_change_notification``, an idle poll ends as soon as the DC notifies a change
(:mod:`connectors.ad.notify`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import partial

from ldap3 import DEREF_NEVER, SUBTREE, Connection
from ldap3.protocol.microsoft import dir_sync_control

from connectors.ad.notify import ChangeNotifications
from connectors.ad.scope import FilterSearch, Publish, ScopeMemory, naming_context, raw_json
from connectors.ad.values import (
    CookieError,
    DirSyncEntry,
    EntryError,
    cookie_usn,
    decode_cookie,
    encode_cookie,
    guid_filter,
    parse_entry,
    to_change,
    usn_position,
)
from connectors.ldap.session import LdapSession
from streams.config.forests import Forest
from streams.contracts import PermanentError, ReadBatch, RejectedRecord
from streams.events import DirectoryChange

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
        self._scope = ScopeMemory(forest.name, forest.base_dn, filtered=forest.filter is not None)
        self._notifications = ChangeNotifications(forest) if self._capture.wake_on_change_notification else None

    async def read(self, position: str | None) -> ReadBatch:
        if self._notifications is not None:
            # Lowered before the read: a change notified during it still ends the wait below.
            self._notifications.clear()
        batch, entries = await asyncio.to_thread(self._read, position)
        if not entries:
            await self._idle()
        return batch

    async def close(self) -> None:
        if self._notifications is not None:
            await self._notifications.close()
        await asyncio.to_thread(self._session.close)

    async def _idle(self) -> None:
        if self._notifications is None:
            await asyncio.sleep(self._capture.poll_interval_seconds)
            return
        self._notifications.start(self._naming_context)
        await self._notifications.wait(self._capture.poll_interval_seconds)

    def _read(self, position: str | None) -> tuple[ReadBatch, int]:
        scope = self._scope.begin(position)
        cookie = b"" if position is None else self._cookie(position)
        changes: list[DirectoryChange] = []
        rejected: list[RejectedRecord] = []
        entries = 0
        changed_at = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        with self._session.connection() as connection:
            more = True
            while more:
                page, cookie, more = self._dirsync(connection, cookie)
                page_position = usn_position(self._usn(cookie))
                publish = self._publish(page_position, changed_at)
                entries += len(page)
                for dn, raw in page:
                    try:
                        entry = parse_entry(dn, raw)
                        change = scope.change(
                            entry,
                            renamed=entry.renamed and not entry.created,
                            publish=publish,
                            whole=partial(self._read_object, connection, entry.object_id),
                            position=page_position,
                            changed_at=changed_at,
                        )
                    except EntryError as exc:
                        rejected.append(RejectedRecord(reason=str(exc), raw=raw_json(dn, raw), position=page_position))
                        continue
                    if change is not None:
                        changes.append(change)
            changes = scope.filtered(changes, FilterSearch(connection, self._config))
        if position is not None and not entries:
            self._scope.returned(position)
            return ReadBatch(changes=(), rejected=(), position=position), 0
        returned = encode_cookie(cookie)
        self._scope.returned(returned, scope)
        log.log(
            logging.INFO if position is None else logging.DEBUG,
            "dirsync read forest=%s snapshot=%s entries=%d changes=%d rejected=%d usn=%d",
            self.forest, position is None, entries, len(changes), len(rejected), self._usn(cookie),
        )
        batch = ReadBatch(
            changes=tuple(changes), rejected=tuple(rejected), position=returned, is_snapshot=position is None
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

    def _publish(self, position: str, changed_at: str) -> Publish:
        return lambda entry, previous: to_change(
            self.forest, entry, previous_dn=previous, position=position, changed_at=changed_at
        )

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
            self._naming_context = naming_context(connection, self.forest, self._config.base_dn)
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

