"""Versioned event schemas that travel on idsync's Kafka topics.

Every record value is an orjson object carrying ``schema`` and ``version`` so that
consumers can refuse what they do not understand instead of guessing.  Decoding is
explicit (``from_bytes``) and raises :class:`EventDecodeError` with the reason, which
callers turn into a dead-letter record.
"""

from __future__ import annotations

import enum
import uuid
import functools
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping

import orjson


# Below Kafka's default limits (message.max.bytes, the producer's max.request.size: 1 MiB),
# leaving room for key and headers. Larger events go to the error topic instead.
MAX_EVENT_BYTES = 900 * 1024


class EventDecodeError(ValueError):
    """A record value is not a valid event of the expected schema."""


class ObjectKind(enum.StrEnum):
    USER = "user"
    GROUP = "group"
    CONTACT = "contact"
    OTHER = "other"


_USER_CLASSES = frozenset({"person", "organizationalperson", "inetorgperson", "user"})
_GROUP_CLASSES = frozenset({"groupofnames", "groupofuniquenames", "group", "posixgroup"})
_NOT_USER_CLASSES = frozenset({"contact", "computer"})


def classify(object_classes: Iterable[str]) -> ObjectKind:
    """Map an entry's objectClass values to the kind of object idsync cares about."""
    classes = {c.lower() for c in object_classes}
    if "contact" in classes:
        return ObjectKind.CONTACT
    if classes & _GROUP_CLASSES:
        return ObjectKind.GROUP
    if classes & _USER_CLASSES and not classes & _NOT_USER_CLASSES:
        return ObjectKind.USER
    return ObjectKind.OTHER


class ChangeOp(enum.StrEnum):
    ADD = "add"
    MODIFY = "modify"
    DELETE = "delete"
    # A rename and a move to another OU are one operation in LDAP (modDN).
    MOVE = "move"


class ModOp(enum.StrEnum):
    ADD = "add"
    DELETE = "delete"
    REPLACE = "replace"


Attributes = Mapping[str, tuple[str, ...]]

# Values travel as text. A value that is not UTF-8 (a photo, a certificate, an objectGUID) is
# base64-encoded under its attribute name plus this suffix, e.g. "jpegPhoto;base64".
BINARY_SUFFIX = ";base64"


@dataclass(frozen=True, slots=True, kw_only=True)
class Modification:
    attribute: str
    op: ModOp
    # For DELETE, no values means "remove the whole attribute".
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectoryChange:
    """One change of one directory object, as its forest reported it."""

    SCHEMA = "idsync.directory-change"
    # Fields added with a default (written_by_idsync) keep version 1: from_dict ignores keys it
    # does not know and defaults those it misses, so old and new builds read each other's events.
    VERSION = 1

    forest: str
    object_id: str
    op: ChangeOp
    dn: str
    # Known when the source states it (adds, snapshots); otherwise the metaverse
    # remembers it from the object's earlier events.
    kind: ObjectKind | None = None
    old_dn: str | None = None
    attributes: Attributes = field(default_factory=dict)
    modifications: tuple[Modification, ...] = ()
    # Opaque, ordered per forest: a re-delivered change carries the same position.
    position: str
    changed_at: str
    # Set on the adds of a snapshot (full import): the metaverse marks what it saw.
    snapshot_id: str | None = None
    # Made by one of the forest's writer accounts (idsync's own writes): for an add, the account
    # that created the object; otherwise the one that made this change.
    written_by_idsync: bool = False

    @property
    def key(self) -> str:
        return source_key(self.forest, self.object_id)

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> DirectoryChange:
        return cls.from_dict(parse(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DirectoryChange:
        check_schema(data, cls)
        try:
            kind = data["kind"]
            return cls(
                forest=_text(data, "forest"),
                object_id=_text(data, "object_id"),
                op=ChangeOp(data["op"]),
                kind=ObjectKind(kind) if kind is not None else None,
                dn=_text(data, "dn"),
                old_dn=data.get("old_dn"),
                attributes={
                    str(name): tuple(str(v) for v in values)
                    for name, values in data.get("attributes", {}).items()
                },
                modifications=tuple(
                    Modification(
                        attribute=str(m["attribute"]),
                        op=ModOp(m["op"]),
                        values=tuple(str(v) for v in m.get("values", ())),
                    )
                    for m in data.get("modifications", ())
                ),
                position=_text(data, "position"),
                changed_at=_text(data, "changed_at"),
                snapshot_id=data.get("snapshot_id"),
                written_by_idsync=data.get("written_by_idsync") is True,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


class SnapshotPhase(enum.StrEnum):
    BEGIN = "begin"
    END = "end"


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMarker:
    """Brackets a forest's snapshot on the changes topic; sent to every partition.

    At END each partition's processor deletes the forest's objects that the snapshot did not
    contain and that had no change after it (mark and sweep).
    """

    SCHEMA = "idsync.snapshot-marker"
    VERSION = 1

    forest: str
    snapshot_id: str
    phase: SnapshotPhase
    # END only: the newest position the snapshot covers; None when it held no object at all.
    high_water: str | None = None
    objects: int = 0
    # An operator's explicit go-ahead for a sweep larger than the mass-delete guard allows.
    allow_mass_delete: bool = False

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> SnapshotMarker:
        return cls.from_dict(parse(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotMarker:
        check_schema(data, cls)
        try:
            high_water = data.get("high_water")
            if high_water is not None and not isinstance(high_water, str):
                raise TypeError("'high_water' must be a string or null")
            return cls(
                forest=_text(data, "forest"),
                snapshot_id=_text(data, "snapshot_id"),
                phase=SnapshotPhase(data["phase"]),
                high_water=high_water,
                objects=int(data.get("objects", 0)),
                allow_mass_delete=data.get("allow_mass_delete") is True,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """Sent to every partition of the changes topic now and then, so that a partition with no
    traffic still shows the processor whether records were skipped before it."""

    SCHEMA = "idsync.heartbeat"
    VERSION = 1

    sent_at: str

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Heartbeat:
        check_schema(data, cls)
        try:
            return cls(sent_at=_text(data, "sent_at"))
        except (KeyError, TypeError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderCaughtUp:
    """Sent to every partition of the changes topic by a forest's reader once its first read
    after a start is published (a snapshot, or what happened while it was stopped): from here
    on the forest's state as of that start is in the stream. The metaverse waits for the
    central forest's before it exports any contact."""

    SCHEMA = "idsync.reader-caught-up"
    VERSION = 1

    forest: str
    sent_at: str

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReaderCaughtUp:
        check_schema(data, cls)
        try:
            return cls(forest=_text(data, "forest"), sent_at=_text(data, "sent_at"))
        except (KeyError, TypeError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


_CHANGE_TOPIC_KINDS = {kind.SCHEMA: kind for kind in (SnapshotMarker, Heartbeat, ReaderCaughtUp)}


def decode_change_topic(raw: bytes | None) -> DirectoryChange | SnapshotMarker | Heartbeat | ReaderCaughtUp:
    """A record of the changes topic: a directory change, a snapshot marker, a reader's
    caught-up marker or a heartbeat."""
    data = parse(raw)
    return _CHANGE_TOPIC_KINDS.get(data.get("schema"), DirectoryChange).from_dict(data)


# Every contact idsync writes carries its anchor here: the mark of idsync's own output.
ANCHOR_ATTRIBUTE = "idsyncAnchor"


def is_person_anchor(value: str) -> bool:
    """An anchor of this idsync: a metaverse person's id (a UUID). Contacts written by idsync
    before the metaverse joined people carry `forest/object_id` instead; no person owns them,
    so they are taken over like contacts made by hand."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactState:
    """The desired state of one contact in the central forest (compacted by anchor)."""

    SCHEMA = "idsync.contact-state"
    VERSION = 1

    anchor: str
    present: bool
    # Where the contact lives (present) or lived (absent) — the OU owned by its forest.
    container_dn: str
    dn: str | None = None
    object_classes: tuple[str, ...] = ()
    attributes: Attributes = field(default_factory=dict)
    # Every attribute idsync owns on contacts: those missing from `attributes` are cleared.
    managed_attributes: tuple[str, ...] = ()
    # The name to use when another person's contact holds `dn` (two people, one display name).
    fallback_dn: str | None = None
    # A contact made by hand or by an older engine, joined to this person: taken over (its anchor
    # added, its managed attributes corrected, moved to `dn`) rather than duplicated.
    adopt_dn: str | None = None
    # When the newest change among the person's sources happened in its directory (optional in v1).
    # Not part of what the contact should look like: the contact writer only measures with it
    # (idsync_sink_latency_seconds: directory change -> contact written).
    changed_at: str | None = None

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> ContactState:
        return cls.from_dict(parse(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContactState:
        check_schema(data, cls)
        try:
            present = data["present"]
            if not isinstance(present, bool):
                raise TypeError("'present' must be a boolean")
            state = cls(
                anchor=_text(data, "anchor"),
                present=present,
                # An absent contact is found by its anchor alone: where it lived may be unknown.
                container_dn=_text(data, "container_dn") if present else str(data.get("container_dn") or ""),
                dn=data.get("dn"),
                object_classes=tuple(str(c) for c in data.get("object_classes", ())),
                attributes={
                    str(name): tuple(str(v) for v in values)
                    for name, values in data.get("attributes", {}).items()
                },
                managed_attributes=tuple(str(a) for a in data.get("managed_attributes", ())),
                fallback_dn=data.get("fallback_dn"),
                adopt_dn=data.get("adopt_dn"),
                changed_at=data.get("changed_at"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc
        if state.present and not state.dn:
            raise EventDecodeError(f"{cls.SCHEMA}: a present contact needs a dn")
        return state


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderPosition:
    """Where a forest's reader resumes; compacted by reader id."""

    SCHEMA = "idsync.reader-position"
    VERSION = 1

    reader: str
    mode: str
    position: str

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> ReaderPosition:
        return cls.from_dict(parse(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReaderPosition:
        check_schema(data, cls)
        try:
            return cls(
                reader=_text(data, "reader"),
                mode=_text(data, "mode"),
                position=_text(data, "position"),
            )
        except (KeyError, TypeError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


def encode(record: Any) -> bytes:
    """A schema dataclass as orjson: the schema id and version it carries, then its fields.

    orjson writes nested dataclasses as objects, enums as their values, tuples as arrays.
    """
    header = {"schema": record.SCHEMA, "version": record.VERSION}
    return orjson.dumps(header | {name: getattr(record, name) for name in _field_names(type(record))})


@functools.cache
def _field_names(schema: type) -> tuple[str, ...]:
    # dataclasses.fields() builds its answer anew on every call; readers encode thousands a second.
    return tuple(f.name for f in fields(schema))


def source_key(forest: str, object_id: str) -> str:
    return f"{forest}/{object_id}"


def parse(raw: bytes | None) -> dict[str, Any]:
    """The JSON object in a record value."""
    if raw is None:
        raise EventDecodeError("record has no value")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EventDecodeError(f"expected a JSON object, got {type(data).__name__}")
    return data


def check_schema(data: dict[str, Any], kind: Any) -> None:
    if data.get("schema") != kind.SCHEMA:
        raise EventDecodeError(f"expected schema {kind.SCHEMA!r}, got {data.get('schema')!r}")
    if data.get("version") != kind.VERSION:
        raise EventDecodeError(
            f"{kind.SCHEMA}: unsupported version {data.get('version')!r} (this build reads {kind.VERSION})"
        )


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name!r} must be a non-empty string")
    return value
