"""What an OpenLDAP reader sees of its forest: the objects under ``base_dn`` matching its filter.

Shared by the polling reader (:mod:`connectors.openldap.accesslog_poll`) and the push reader
(:mod:`connectors.openldap.syncrepl`): both decode the same accesslog records, see them through the
same scope (a move across base_dn is an add or a delete for idsync; an object that starts or
stops matching the forest's filter enters or leaves scope, see :mod:`connectors.ldap.scope_filter`)
and start from the same snapshot; they differ only in how records reach them. The generic
poller (:mod:`connectors.ldap.generic_poll`) shares the snapshot, the filter and entry decoding.

idsync's own writes are flagged (``written_by_idsync``) when made by one of the forest's writer
accounts: for a logged change the record's ``reqAuthzID`` names the account; an object read
whole names its creator in ``creatorsName``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from typing import Mapping, Sequence

import orjson
from ldap3 import DEREF_NEVER, SUBTREE
from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from connectors.ldap.scope_filter import FilterMemory
from connectors.ldap.session import LdapSession
from connectors.ldap.values import RecordError, attribute_value, within
from connectors.openldap.accesslog import decode_record
from streams.config.forests import Forest
from streams.contracts import RejectedRecord
from streams.events import ChangeOp, DirectoryChange, ObjectKind, classify

log = logging.getLogger(__name__)

# Objects looked up per search: keeps the filter well inside servers' request size limits.
_LOOKUP_CHUNK = 100
# After this many objects looked up one by one, the kinds come from one scan of base_dn.
_SCAN_INSTEAD_OF_LOOKUP = 300

# What decode_record needs of an auditWriteObject entry; entryCSN, its position, is operational
# and so only sent when asked for by name.
RECORD_ATTRIBUTES = [
    "entryCSN",
    "reqStart",
    "reqType",
    "reqDN",
    "reqMod",
    "reqEntryUUID",
    "reqNewRDN",
    "reqNewDN",
    "reqNewSuperior",
    "reqDeleteOldRDN",
    "reqAuthzID",
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
        self._looked_up = 0
        self._filter = FilterMemory() if forest.filter else None
        self._writers = WriterAccounts(forest.change_capture.writer_accounts)
        # What an object read whole carries: its state, its id, and who created it.
        self.entry_attributes = ["*", "entryUUID", *(["creatorsName"] if self._writers else [])]

    def forget(self) -> None:
        """The reader resumes from a position other than its last batch's: what those batches
        taught about the filter may never have reached downstream."""
        if self._filter is not None:
            self._filter.forget()

    def publishable(self, changes: list[DirectoryChange]) -> list[DirectoryChange]:
        """The changes seen through the forest's filter, each naming its object's kind."""
        if self._filter is not None:
            memory = self._filter.copy()  # kept only if the directory answered every question
            changes = memory.apply(changes, self)
            self._filter = memory
        return self.with_kinds(changes)

    def matching(self, object_ids: Sequence[str]) -> set[str]:
        """Of these objects, those under base_dn that match the forest's filter now."""
        return {id_of(entry) for entry in self._entries(object_ids, ["entryUUID"], matching_filter=True)}

    def matching_whole(self, object_ids: Sequence[str]) -> dict[str, DirectoryChange]:
        """The whole state, as an ADD without a position of its own, of each of these objects that
        is under base_dn and matches the forest's filter now."""
        return {
            change.object_id: change
            for change in (
                self.entry_change(entry, "")
                for entry in self._entries(object_ids, self.entry_attributes, matching_filter=True)
            )
        }

    def record_change(
        self, raw: Mapping[str, Sequence[bytes]], position: str
    ) -> DirectoryChange | RejectedRecord | None:
        """One accesslog record as a change in scope, a record for the error topic (carrying
        `position`, what names the record in the log), or nothing (an operation idsync ignores,
        or outside base_dn)."""
        try:
            change = self.scoped(decode_record(self.forest, raw))
        except RecordError as exc:
            return RejectedRecord(reason=str(exc), raw=raw_json(raw), position=position)
        if change is not None and self._writers and self._writers.wrote(raw.get("reqAuthzID")):
            change = replace(change, written_by_idsync=True)
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
        """Kinds of the objects still in the directory; one gone already has none. Once many
        objects were looked up (a backlog after a restart), one scan of base_dn answers, and
        teaches the kinds of every other object too: ldap3 encodes a search filter at about
        0.1 ms a term, so naming thousands of objects cost more than reading them all
        (bench/reader_to_kafka.py)."""
        if not object_ids:
            return {}
        self._looked_up += len(object_ids)
        if self._looked_up >= _SCAN_INSTEAD_OF_LOOKUP:
            self._looked_up = 0
            entries = self._all_entries(["objectClass", "entryUUID"])
        else:
            entries = self._entries(object_ids, ["objectClass", "entryUUID"])
        return {
            id_of(entry): classify(value.decode() for value in entry["raw_attributes"].get("objectClass", ()))
            for entry in entries
            if entry["raw_attributes"].get("entryUUID")
        }

    def _all_entries(self, attributes: list[str]) -> list[dict]:
        with self._session.connection() as connection:
            entries = connection.extend.standard.paged_search(
                self._config.base_dn,
                "(objectClass=*)",
                search_scope=SUBTREE,
                dereference_aliases=DEREF_NEVER,
                attributes=attributes,
                paged_size=self._page_size,
                generator=False,
            )
        return [entry for entry in entries if entry.get("type") == "searchResEntry"]

    def _entries(
        self, object_ids: Sequence[str], attributes: list[str], *, matching_filter: bool = False
    ) -> list[dict]:
        """The entries under base_dn with these entryUUIDs (and matching the forest's filter if
        asked), many per search."""
        found = []
        for chunk in range(0, len(object_ids), _LOOKUP_CHUNK):
            ids = object_ids[chunk : chunk + _LOOKUP_CHUNK]
            wanted = "(|" + "".join(f"(entryUUID={escape_filter_chars(i)})" for i in ids) + ")"
            with self._session.connection() as connection:
                entries = connection.extend.standard.paged_search(
                    self._config.base_dn,
                    f"(&{wanted}{self._config.filter})" if matching_filter else wanted,
                    search_scope=SUBTREE,
                    dereference_aliases=DEREF_NEVER,
                    attributes=attributes,
                    paged_size=self._page_size,
                    generator=False,
                )
                found += [entry for entry in entries if entry.get("type") == "searchResEntry"]
        return found

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
        """Every object in scope (under base_dn, matching the filter) as an add carrying `position`."""
        changes, rejected = [], []
        with self._session.connection() as connection:
            entries = connection.extend.standard.paged_search(
                self._config.base_dn,
                self._config.filter or "(objectClass=*)",
                search_scope=SUBTREE,
                dereference_aliases=DEREF_NEVER,
                attributes=self.entry_attributes,
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
        if self._filter is not None:
            self._filter.learn_snapshot([change.object_id for change in changes])
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
                attributes=self.entry_attributes,
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
        creator = attributes.pop("creatorsName", ())
        return DirectoryChange(
            forest=self.forest,
            object_id=object_id,
            op=ChangeOp.ADD,
            dn=entry["dn"],
            kind=classify(attributes.get("objectClass", ())),
            attributes=attributes,
            position=position,
            changed_at=datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            written_by_idsync=bool(self._writers) and self._writers.wrote(creator),
        )


class WriterAccounts:
    """Recognises the forest's writer accounts by DN, as an accesslog's reqAuthzID (``dn:<DN>``)
    or an entry's creatorsName names them. Few accounts write, so each answer is remembered."""

    def __init__(self, accounts: Sequence[str]) -> None:
        self._accounts = {key for account in accounts if (key := _dn_key(account)) is not None}
        self._answers: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._accounts)

    def wrote(self, values: Sequence[bytes | str] | None) -> bool:
        if not values:
            return False
        value = values[0] if isinstance(values[0], str) else bytes(values[0]).decode("utf-8", "replace")
        answer = self._answers.get(value)
        if answer is None:
            dn = value[3:] if value[:3].lower() == "dn:" else value
            answer = self._answers[value] = _dn_key(dn) in self._accounts
        return answer


def _dn_key(dn: str) -> tuple[tuple[str, str], ...] | None:
    """A DN in comparable form (types and values case-folded, spaces around separators gone)."""
    try:
        return tuple((name.lower(), value.lower()) for name, value, _ in parse_dn(dn, strip=True))
    except LDAPInvalidDnError:
        return None


def id_of(entry: dict) -> str:
    return entry["raw_attributes"]["entryUUID"][0].decode()


def raw_json(raw: Mapping[str, Sequence[bytes]]) -> bytes:
    """Raw LDAP attributes as JSON for the error topic (bytes shown with replacement chars)."""
    return orjson.dumps(
        {name: [bytes(v).decode("utf-8", errors="replace") for v in values] for name, values in raw.items()}
    )
