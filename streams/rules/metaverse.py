"""The metaverse: what idsync knows of every directory object, built from change events.

Pure functions over immutable values; the faust table in :mod:`streams.processors.app` stores
them. Attribute names are kept lower-cased because LDAP attribute descriptions are
case-insensitive and different servers spell them differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from streams.events import (
    ChangeOp,
    DirectoryChange,
    Modification,
    ModOp,
    ObjectKind,
    SnapshotMarker,
    check_schema,
    encode,
    parse,
    source_key,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceObject:
    """The latest known state of one object in one forest."""

    SCHEMA = "idsync.metaverse-entry"
    VERSION = 1

    forest: str
    object_id: str
    kind: ObjectKind | None
    dn: str
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    position: str
    # Deleted objects stay as tombstones so that a late re-delivery cannot revive them.
    deleted: bool = False
    # Deleted by a snapshot's sweep, not by the source: presumed gone. The attributes are kept, so
    # that a later change (proof that the object exists after all) finds the object whole.
    swept: bool = False
    # The last snapshot (full import) that contained the object: what mark and sweep reads.
    snapshot: str | None = None
    # Created by one of idsync's writer accounts: idsync's own output, never a person to provision.
    created_by_idsync: bool = False
    # When the source says the object last changed (DirectoryChange.changed_at); carried on to the
    # person's contact only to measure end-to-end latency (idsync_sink_latency_seconds).
    changed_at: str | None = None

    @property
    def key(self) -> str:
        return source_key(self.forest, self.object_id)

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SourceObject:
        data = parse(raw)
        check_schema(data, cls)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceObject:
        kind = data["kind"]
        return cls(
            forest=data["forest"],
            object_id=data["object_id"],
            kind=ObjectKind(kind) if kind else None,
            dn=data["dn"],
            attributes={k: tuple(v) for k, v in data["attributes"].items()},
            position=data["position"],
            deleted=data["deleted"],
            snapshot=data.get("snapshot"),
            created_by_idsync=data.get("created_by_idsync") is True,
            changed_at=data.get("changed_at"),
            swept=data.get("swept") is True,
        )


def apply_change(current: SourceObject | None, change: DirectoryChange) -> SourceObject | None:
    """Fold one change into an object's state.

    Returns None when the change is not newer than what is already applied: a re-delivery
    after a reader restart or a replay of the topic then changes nothing.
    """
    if current is not None and change.position <= current.position:
        if change.snapshot_id and current.snapshot != change.snapshot_id and not current.deleted:
            # Older content than ours, yet proof that the object existed when the snapshot was read.
            return replace(current, snapshot=change.snapshot_id)
        return None
    if change.op is ChangeOp.ADD:
        # An add restating a living object (a snapshot, an object read whole) may not know who
        # created it; the object's origin does not change while it lives.
        living = current is not None and not current.deleted
        return SourceObject(
            forest=change.forest,
            object_id=change.object_id,
            kind=change.kind,
            dn=change.dn,
            attributes=_lowercase_names(change.attributes),
            position=change.position,
            changed_at=change.changed_at,
            snapshot=change.snapshot_id,
            created_by_idsync=change.written_by_idsync or (living and current.created_by_idsync),
        )
    if current is not None and current.swept:
        current = replace(current, deleted=False, swept=False)  # it exists after all
    base = current if current is not None and not current.deleted else None
    kind = change.kind or (current.kind if current is not None else None)
    if change.op is ChangeOp.DELETE:
        return SourceObject(
            forest=change.forest,
            object_id=change.object_id,
            kind=kind,
            dn=change.dn,
            position=change.position,
            changed_at=change.changed_at,
            deleted=True,
        )
    attributes = apply_modifications(base.attributes if base else {}, change.modifications)
    if base is None:
        # A change to an object never seen before: keep what the change tells.
        return SourceObject(
            forest=change.forest,
            object_id=change.object_id,
            kind=kind,
            dn=change.dn,
            attributes=attributes,
            position=change.position,
            changed_at=change.changed_at,
        )
    return replace(base, kind=kind, dn=change.dn, attributes=attributes, position=change.position,
                   changed_at=change.changed_at)


def sweep_candidates(entries: Iterable[SourceObject], marker: SnapshotMarker) -> list[SourceObject]:
    """Objects of the marker's forest that its snapshot did not contain, and that no change
    newer than the snapshot touched: they were deleted while nobody was listening.

    An empty snapshot has no position to bound "newer" by, so it deletes nothing unless an
    operator allowed it: an empty scope is likelier a misconfiguration than an emptied forest,
    and replaying such a marker later must not remove what was added since.
    """
    if marker.high_water is None and not marker.allow_mass_delete:
        return []
    return [
        entry
        for entry in entries
        if entry.forest == marker.forest
        and not entry.deleted
        and entry.snapshot != marker.snapshot_id
        and (marker.high_water is None or entry.position <= marker.high_water)
    ]


def sweep_refusal(candidates: int, live: int, *, max_fraction: float, always_allowed: int) -> str | None:
    """Why a sweep must not run, or None. Guards against mass deletes from a bad snapshot
    (an empty OU, a wrong base DN, a directory restored from an old backup)."""
    if candidates <= always_allowed or candidates <= max_fraction * live:
        return None
    return (
        f"snapshot would delete {candidates} of {live} objects, over the limit of "
        f"{max_fraction:.0%} (or {always_allowed} objects)"
    )


def tombstone(entry: SourceObject) -> SourceObject:
    """A swept object: deleted, its attributes kept (see `swept`)."""
    return replace(entry, deleted=True, swept=True)


def apply_modifications(
    attributes: Mapping[str, tuple[str, ...]], modifications: Iterable[Modification]
) -> dict[str, tuple[str, ...]]:
    result = dict(attributes)
    for mod in modifications:
        name = mod.attribute.lower()
        existing = result.get(name, ())
        if mod.op is ModOp.REPLACE:
            updated = _unique(mod.values)
        elif mod.op is ModOp.ADD:
            updated = _unique(existing + mod.values)
        elif mod.values:
            removed = set(mod.values)
            updated = tuple(v for v in existing if v not in removed)
        else:
            updated = ()
        if updated:
            result[name] = updated
        else:
            result.pop(name, None)
    return result


def _lowercase_names(attributes: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    result: dict[str, tuple[str, ...]] = {}
    for name, values in attributes.items():
        key = name.lower()
        result[key] = _unique(result.get(key, ()) + tuple(values))
    return result


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))
