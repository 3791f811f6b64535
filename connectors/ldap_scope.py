"""What an OpenLDAP accesslog reader sees of its forest: the objects under ``base_dn``.

Shared by the polling reader (:mod:`connectors.ldap_accesslog`) and the push reader
(:mod:`connectors.ldap_syncrepl`): both decode the same accesslog records, see them through the
same scope (a move across base_dn is an add or a delete for idsync) and start from the same
snapshot; they differ only in how records reach them.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from typing import Mapping, Sequence

import orjson
from ldap3 import DEREF_NEVER, SUBTREE
from ldap3.utils.conv import escape_filter_chars

from connectors.accesslog import RecordError, attribute_value, decode_record, within
from connectors.ldap_session import LdapSession
from streams.contracts import RejectedRecord
from streams.events import ChangeOp, DirectoryChange, ObjectKind
from streams.metaverse import classify
from streams.topology import Forest

log = logging.getLogger(__name__)

# Objects looked up per search: keeps the filter well inside servers' request size limits.
_LOOKUP_CHUNK = 100

# What decode_record needs of an auditWriteObject entry.
RECORD_ATTRIBUTES = [
    "reqStart",
    "reqType",
    "reqDN",
    "reqMod",
    "reqEntryUUID",
    "reqNewRDN",
    "reqNewDN",
    "reqNewSuperior",
    "reqDeleteOldRDN",
]


class ForestScope:
    """Blocking: readers call it from a worker thread, one call at a time."""

    def __init__(self, forest: Forest, session: LdapSession, *, page_size: int) -> None:
        self.forest = forest.name
        self._config = forest
        self._session = session
        self._page_size = page_size
        # The accesslog names the object class only on adds; every event states it, so the
        # kinds of objects seen are remembered, and looked up once for the others (with_kinds).
        self._kinds: dict[str, ObjectKind] = {}

    def record_change(
        self, raw: Mapping[str, Sequence[bytes]], start: str
    ) -> DirectoryChange | RejectedRecord | None:
        """One accesslog record as a change in scope, a record for the error topic, or nothing
        (an operation idsync ignores, or outside base_dn)."""
        try:
            change = self.scoped(decode_record(self.forest, raw))
        except RecordError as exc:
            return RejectedRecord(reason=str(exc), raw=raw_json(raw), position=start)
        return change

    def with_kinds(self, changes: list[DirectoryChange]) -> list[DirectoryChange]:
        """The changes, each naming its object's kind: remembered from adds and snapshots, and
        looked up, many objects per search, for those first met here (after a restart, all)."""
        for change in changes:
            if change.kind is not None:
                self._kinds[change.object_id] = change.kind
        unknown = sorted({c.object_id for c in changes if c.kind is None and c.object_id not in self._kinds})
        self._kinds.update(self._lookup_kinds(unknown))
        named = []
        for change in changes:
            kind = change.kind or self._kinds.get(change.object_id)
            named.append(replace(change, kind=kind) if kind is not change.kind else change)
            if change.op is ChangeOp.DELETE:
                self._kinds.pop(change.object_id, None)
        return named

    def _lookup_kinds(self, object_ids: Sequence[str]) -> dict[str, ObjectKind]:
        """Kinds of the objects still in the directory; one gone already has none."""
        kinds: dict[str, ObjectKind] = {}
        for chunk in range(0, len(object_ids), _LOOKUP_CHUNK):
            wanted = "".join(f"(entryUUID={escape_filter_chars(i)})" for i in object_ids[chunk : chunk + _LOOKUP_CHUNK])
            with self._session.connection() as connection:
                entries = connection.extend.standard.paged_search(
                    self._config.base_dn,
                    f"(|{wanted})",
                    search_scope=SUBTREE,
                    dereference_aliases=DEREF_NEVER,
                    attributes=["objectClass", "entryUUID"],
                    paged_size=self._page_size,
                    generator=False,
                )
                for entry in entries:
                    if entry.get("type") == "searchResEntry":
                        raw = entry["raw_attributes"]
                        classes = (value.decode() for value in raw.get("objectClass", ()))
                        kinds[raw["entryUUID"][0].decode()] = classify(classes)
        return kinds

    def scoped(self, change: DirectoryChange | None) -> DirectoryChange | None:
        """The change as seen from inside base_dn: moves across its edge become adds or deletes."""
        if change is None:
            return None
        base = self._config.base_dn
        if change.op is not ChangeOp.MOVE:
            return change if within(change.dn, base) else None
        was_inside, is_inside = within(change.old_dn, base), within(change.dn, base)
        if was_inside and is_inside:
            return change
        if was_inside:
            return replace(change, op=ChangeOp.DELETE, dn=change.old_dn, old_dn=None, modifications=())
        if is_inside:
            return self._entry_as_add(change)
        return None

    def snapshot(self, position: str) -> tuple[list[DirectoryChange], list[RejectedRecord]]:
        """Every object under base_dn as an add carrying `position`."""
        changes, rejected = [], []
        with self._session.connection() as connection:
            entries = connection.extend.standard.paged_search(
                self._config.base_dn,
                "(objectClass=*)",
                search_scope=SUBTREE,
                dereference_aliases=DEREF_NEVER,
                attributes=["*", "entryUUID"],
                paged_size=self._page_size,
                generator=True,
            )
            for entry in entries:
                if entry.get("type") != "searchResEntry":
                    continue
                try:
                    changes.append(self.entry_change(entry, position))
                    self._kinds[changes[-1].object_id] = changes[-1].kind
                except RecordError as exc:
                    rejected.append(
                        RejectedRecord(reason=str(exc), raw=raw_json(entry["raw_attributes"]), position=position)
                    )
        log.info("snapshot read forest=%s objects=%d rejected=%d", self.forest, len(changes), len(rejected))
        return changes, rejected

    def _entry_as_add(self, change: DirectoryChange) -> DirectoryChange | None:
        """An object moved into scope: read it whole, since its earlier history was not ours."""
        with self._session.connection() as connection:
            connection.search(
                self._config.base_dn,
                f"(entryUUID={escape_filter_chars(change.object_id)})",
                search_scope=SUBTREE,
                dereference_aliases=DEREF_NEVER,
                attributes=["*", "entryUUID"],
            )
            found = [e for e in connection.response if e.get("type") == "searchResEntry"]
        # Gone again already: the delete that follows in the log says so.
        return self.entry_change(found[0], change.position) if found else None

    def entry_change(self, entry: dict, position: str) -> DirectoryChange:
        """A search result entry as an add carrying its whole state; RecordError without entryUUID."""
        attributes: dict[str, tuple[str, ...]] = {}
        for name, values in entry["raw_attributes"].items():
            for value in values:
                key, text = attribute_value(name, value)
                attributes[key] = attributes.get(key, ()) + (text,)
        object_id = attributes.pop("entryUUID", (None,))[0]
        if not object_id:
            raise RecordError(f"entry {entry['dn']!r} has no entryUUID")
        return DirectoryChange(
            forest=self.forest,
            object_id=object_id,
            op=ChangeOp.ADD,
            dn=entry["dn"],
            kind=classify(attributes.get("objectClass", ())),
            attributes=attributes,
            position=position,
            changed_at=datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        )


def raw_json(raw: Mapping[str, Sequence[bytes]]) -> bytes:
    """Raw LDAP attributes as JSON for the error topic (bytes shown with replacement chars)."""
    return orjson.dumps(
        {name: [bytes(v).decode("utf-8", errors="replace") for v in values] for name, values in raw.items()}
    )
