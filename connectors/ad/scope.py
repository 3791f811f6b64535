"""What an Active Directory reader sees of its forest: the objects under ``base_dn``, and where each one was.

Shared by the DirSync reader (:mod:`connectors.ad.dirsync`) and the uSNChanged poller
(:mod:`connectors.ad.usn_poll`). Both read the whole naming context (DirSync must start at its
root; the poller must see objects leave ``base_dn``) and neither source says where a renamed
object was. So a reader remembers the DN of every object in scope, learnt from its snapshot and
kept up with each batch, to turn a rename into a MOVE and to notice objects leaving ``base_dn``.
After a restart from a stored position that memory is empty; an object renamed into scope is then
published whole, as an ADD, and one renamed out of scope as a DELETE (harmless if it was never in
scope: nothing downstream knows it).

A forest's LDAP filter narrows the scope further (:mod:`connectors.ldap.scope_filter`): neither
DirSync nor uSNChanged can evaluate it, so after each batch the DC is asked which of the batch's
objects match now (:class:`FilterSearch`), and objects enter and leave scope accordingly. The
snapshot starts from "nothing matches", so it keeps exactly the matching objects.

Neither source names the account that made a change, so writer accounts cannot be recognised
here: idsync's own entries in AD are recognised by their ``idsyncAnchor`` marker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import orjson
from ldap3 import BASE, DEREF_NEVER, SUBTREE, Connection

from connectors.ad.values import DirSyncEntry, guid_filter, parse_entry, same_dn, to_change
from connectors.ldap.scope_filter import FilterLookup, FilterMemory
from connectors.ldap.values import attribute_value, within
from streams.config.forests import Forest
from streams.contracts import PermanentError
from streams.events import ChangeOp, DirectoryChange, ObjectKind

# How a reader turns an entry into its event, given where the object was last seen in scope.
Publish = Callable[[DirSyncEntry, "str | None"], DirectoryChange]
# Objects asked about per search: keeps the filter well inside servers' request size limits.
_LOOKUP_CHUNK = 100


@dataclass(slots=True)
class ScopeBatch:
    """The scope as one batch changes it; becomes the reader's memory only once the batch is returned."""

    forest: str
    base_dn: str
    snapshot: bool
    complete: bool
    known: dict[str, str] = field(default_factory=dict)
    # DirSync names the object class only when it first sends an object; every event states it.
    kinds: dict[str, ObjectKind] = field(default_factory=dict)
    # Which objects match the forest's filter; None without a filter.
    matches: FilterMemory | None = None

    def filtered(self, changes: list[DirectoryChange], directory: FilterLookup) -> list[DirectoryChange]:
        """The batch's changes seen through the forest's filter (all of them without one)."""
        return changes if self.matches is None else self.matches.apply(changes, directory)

    def change(
        self,
        entry: DirSyncEntry,
        *,
        renamed: bool,
        publish: Publish,
        whole: Callable[[], DirSyncEntry | None],
        position: str,
        changed_at: str,
    ) -> DirectoryChange | None:
        """The entry's change as seen from inside base_dn, or None.

        `renamed`: the object's DN may have changed since the last batch. `whole` reads the object
        in full, for one that came into scope (its earlier history is not ours).
        """
        change = self._located(
            entry, renamed=renamed, publish=publish, whole=whole, position=position, changed_at=changed_at
        )
        if change is None:
            return None
        if change.kind is not None:
            self.kinds[change.object_id] = change.kind
        elif (kind := self.kinds.get(change.object_id)) is not None:
            change = replace(change, kind=kind)
        if change.op is ChangeOp.DELETE:
            self.kinds.pop(change.object_id, None)
        return change

    def _located(
        self,
        entry: DirSyncEntry,
        *,
        renamed: bool,
        publish: Publish,
        whole: Callable[[], DirSyncEntry | None],
        position: str,
        changed_at: str,
    ) -> DirectoryChange | None:
        previous = self.known.get(entry.object_id)
        common = {"position": position, "changed_at": changed_at}
        if entry.deleted:
            self.known.pop(entry.object_id, None)
            if self.snapshot:
                return None  # a snapshot lists the living; the sweep after it removes the rest
            change = to_change(self.forest, entry, previous_dn=previous, **common)
            return change if within(change.dn, self.base_dn) else None
        inside = within(entry.dn, self.base_dn)
        if renamed and (previous is None or not same_dn(previous, entry.dn)):
            return self._renamed(entry, previous, inside, publish, whole, common)
        if not inside:
            return None
        self.known[entry.object_id] = entry.dn
        return publish(entry, previous)

    def _renamed(
        self,
        entry: DirSyncEntry,
        previous: str | None,
        inside: bool,
        publish: Publish,
        whole: Callable[[], DirSyncEntry | None],
        common: dict[str, str],
    ) -> DirectoryChange | None:
        if previous is not None and inside:
            self.known[entry.object_id] = entry.dn
            return publish(entry, previous)
        if previous is not None:
            del self.known[entry.object_id]
            return DirectoryChange(
                forest=self.forest, object_id=entry.object_id, op=ChangeOp.DELETE, dn=previous, **common
            )
        if inside:
            read = whole()
            if read is None:  # gone again: a later batch brings the delete or the move out
                return None
            self.known[entry.object_id] = read.dn
            return publish(read, None)
        if self.complete:
            return None  # every object in scope is known, so this one never was
        return DirectoryChange(
            forest=self.forest, object_id=entry.object_id, op=ChangeOp.DELETE, dn=entry.dn, **common
        )


class ScopeMemory:
    """The DN of every object in scope as of the position a reader last returned."""

    def __init__(self, forest: str, base_dn: str, *, filtered: bool = False) -> None:
        self._forest = forest
        self._base_dn = base_dn
        self._known: dict[str, str] = {}
        self._kinds: dict[str, ObjectKind] = {}
        self._filtered = filtered
        self._matches = FilterMemory() if filtered else None
        # True when _known holds every object in scope (built from a snapshot in this process).
        self._complete = False
        self._returned: str | None = None

    def begin(self, position: str | None) -> ScopeBatch:
        if position is None or position != self._returned:
            # A snapshot, or not a continuation of our own last batch (start, or a retry after
            # a failed publish): what was learnt from unpublished batches must not be used.
            self._known, self._kinds, self._complete = {}, {}, False
            self._matches = FilterMemory() if self._filtered else None
        matches = self._matches.copy() if self._matches is not None else None
        if matches is not None and position is None:
            matches.learn_snapshot([])  # the snapshot keeps what the filter matches, nothing else
        return ScopeBatch(
            forest=self._forest,
            base_dn=self._base_dn,
            snapshot=position is None,
            complete=self._complete,
            known=dict(self._known),
            kinds=dict(self._kinds),
            matches=matches,
        )

    def returned(self, position: str, batch: ScopeBatch | None = None) -> None:
        """The reader returns `position`; with the batch that led there, whose memory it keeps."""
        if batch is not None:
            self._known, self._kinds, self._matches = batch.known, batch.kinds, batch.matches
            self._complete = self._complete or batch.snapshot
        self._returned = position


class FilterSearch:
    """The DC's answers to the forest filter's questions, objects named by objectGUID."""

    def __init__(self, connection: Connection, forest: Forest) -> None:
        self._connection = connection
        self._forest = forest

    def matching(self, object_ids: Sequence[str]) -> set[str]:
        return {entry.object_id for entry in self._search(object_ids, ["objectGUID"])}

    def matching_whole(self, object_ids: Sequence[str]) -> dict[str, DirectoryChange]:
        """Read whole (whenCreated included), each is an ADD; its position is the caller's to set."""
        return {
            entry.object_id: to_change(self._forest.name, entry, position="", changed_at="")
            for entry in self._search(object_ids, ["*"])
        }

    def _search(self, object_ids: Sequence[str], attributes: list[str]) -> list[DirSyncEntry]:
        found = []
        for chunk in range(0, len(object_ids), _LOOKUP_CHUNK):
            wanted = "".join(guid_filter(i) for i in object_ids[chunk : chunk + _LOOKUP_CHUNK])
            entries = self._connection.extend.standard.paged_search(
                self._forest.base_dn,
                f"(&(|{wanted}){self._forest.filter})",
                search_scope=SUBTREE,
                dereference_aliases=DEREF_NEVER,
                attributes=attributes,
                paged_size=_LOOKUP_CHUNK,
                generator=False,
            )
            found += [
                parse_entry(entry["dn"], entry["raw_attributes"])
                for entry in entries
                if entry.get("type") == "searchResEntry"
            ]
        return found


def naming_context(connection: Connection, forest: str, base_dn: str) -> str:
    """The naming context (domain partition) holding base_dn, from the rootDSE."""
    connection.search("", "(objectClass=*)", search_scope=BASE, attributes=["namingContexts"])
    contexts = [
        value.decode("utf-8")
        for entry in connection.response
        if entry.get("type") == "searchResEntry"
        for value in entry["raw_attributes"].get("namingContexts", ())
    ]
    holding = [context for context in contexts if within(base_dn, context)]
    if not holding:
        raise PermanentError(
            f"forest {forest}: base_dn {base_dn!r} is in none of the server's naming contexts ({'; '.join(contexts)})"
        )
    return max(holding, key=len)


def raw_json(dn: str, raw: Mapping[str, Sequence[bytes] | None]) -> bytes:
    """An entry as JSON for the error topic, values lossless (binary ones base64 under name;base64)."""
    attributes: dict[str, list[str]] = {}
    for name, values in raw.items():
        for value in values or ():
            key, text = attribute_value(name, bytes(value))
            attributes.setdefault(key, []).append(text)
    return orjson.dumps({"dn": dn, "attributes": attributes})
