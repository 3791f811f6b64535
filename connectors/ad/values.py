"""Decoding Active Directory DirSync results into directory change events.

Pure functions: the reader in :mod:`connectors.ad.dirsync` feeds them the raw attributes of
the entries a DirSync search returns. What DirSync sends, and how it becomes an event:

- Every entry carries ``objectGUID``; its canonical text (AD's mixed-endian layout, the form
  AD itself prints) is the event's ``object_id``.
- DirSync does not say whether an object is new. An object created since the cookie (or every
  object, with an empty cookie) comes with all its attributes, ``whenCreated`` among them;
  ``whenCreated`` never changes, so a changed object never carries it. Rule: an entry with
  ``whenCreated`` is an ADD of the whole object, any other entry a MODIFY of what it carries.
- A deleted object comes back as its tombstone: ``isDeleted=TRUE``, named
  ``<rdn>\\0ADEL:<guid>`` under ``CN=Deleted Objects``, with ``lastKnownParent``. The DELETE
  names the DN the object had, rebuilt from those two when the caller does not know it.
- A rename or move keeps the objectGUID and shows the new DN with a changed ``name`` (and
  ``parentGUID``). It becomes a MOVE when the caller knows the previous DN, otherwise a MODIFY
  carrying the new DN.
- The naming attribute (``cn`` of ``CN=...``) is never sent: it is rebuilt from ``name``,
  which AD keeps equal to the RDN value.
- With incremental values, a linked attribute's added values come as ``member;range=1-1`` and
  its removed values as ``member;range=0-0``. An attribute sent without values was cleared.
- Links are kept by object, not by DN: renaming a member changes none of its groups, and on
  Samba 4.17 neither does deleting one (its groups drop the value with no change of their own:
  no delta, no new uSNChanged; measured with both readers). So a group's events name members by
  the DNs they had when the group last changed, and a deleted member's leaving is its DELETE.
- Values travel as text, lossless: known binary syntaxes (SIDs, photos, certificates) and any
  value that is not UTF-8 go base64-encoded under ``<name>;base64``, all values of the
  attribute alike.

DirSync never returns ``uSNChanged`` (it is not replicated), so an event's position is the USN
high-water mark of the cookie returned with it: every change it covers is at or below that
USN and every later change above it. Zero-padded to 20 digits, positions sort as text.

The uSNChanged poller (:mod:`connectors.ad.usn_poll`) reads whole entries with a plain search
instead; they carry ``whenCreated``, so :func:`to_change` makes each an ADD of the latest state.
Its own rules are :func:`entry_usn`, :func:`rdn_usn` and :func:`latest_state`.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from connectors.ldap.values import attribute_value, within
from connectors.ldap.wire import RawAttributes as WireAttributes
from streams.events import BINARY_SUFFIX, ChangeOp, DirectoryChange, Modification, ModOp, ObjectKind, classify

RawAttributes = Mapping[str, Sequence[bytes] | None]

# Kept by the DC for its own bookkeeping (or read here to decide the operation), never part of
# what a person changed. The second group is what a plain search returns but DirSync never
# reports (not replicated, constructed, or backlinks such as memberOf, derived from the forward
# links DirSync does send): an object read whole must not carry values no later event updates.
IGNORED_ATTRIBUTES = frozenset(
    name.lower()
    for name in (
        "objectGUID",
        "parentGUID",
        "instanceType",
        "nTSecurityDescriptor",
        "replPropertyMetaData",
        "whenCreated",
        "isDeleted",
        "isRecycled",
        "lastKnownParent",
        "dSCorePropagationData",
        # never in DirSync results
        "distinguishedName",
        "whenChanged",
        "uSNCreated",
        "uSNChanged",
        "lastLogon",
        "lastLogoff",
        "logonCount",
        "badPwdCount",
        "badPasswordTime",
        "memberOf",
        "directReports",
    )
)

# Secrets: DirSync is asked for public data only, but their names still show up, empty.
SECRET_ATTRIBUTES = frozenset(
    name.lower()
    for name in (
        "unicodePwd",
        "dBCSPwd",
        "ntPwdHistory",
        "lmPwdHistory",
        "supplementalCredentials",
        "currentValue",
        "priorValue",
        "trustAuthIncoming",
        "trustAuthOutgoing",
        "initialAuthIncoming",
        "initialAuthOutgoing",
    )
)

# Octet-string and SID syntaxes: their bytes can happen to be valid UTF-8, so they are always
# base64 (one spelling of each attribute, whatever its current value).
BINARY_ATTRIBUTES = frozenset(
    name.lower()
    for name in (
        "objectSid",
        "sIDHistory",
        "securityIdentifier",
        "mS-DS-ConsistencyGuid",
        "msExchMailboxGuid",
        "msExchArchiveGUID",
        "msExchMasterAccountSid",
        "thumbnailPhoto",
        "jpegPhoto",
        "userCertificate",
        "userSMIMECertificate",
        "cACertificate",
        "logonHours",
    )
)

_RANGE = re.compile(r"^(?P<name>[^;]+);range=(?P<low>\d+)-(?P<high>\d+|\*)$", re.IGNORECASE)
# Samba prefixes some DN values in DirSync results with their GUID/SID (extended DN form).
_EXTENDED_DN = re.compile(r"^(?:<(?:GUID|SID|WKGUID)=[0-9A-Za-z:,\-]*>;)+")
_TOMBSTONE_MARK = "\nDEL:"
_COOKIE_MAGIC = b"MSDS"
# MS-ADTS 3.1.1.3.4.1.3 cookie: signature, version, creation time, reserved, UTD vector size,
# then the USN vector (usnHighObjUpdate, usnReserved, usnHighPropUpdate).
_COOKIE_USN_VECTOR = struct.Struct("<4sIQQIQQQ")
# MS-DRSR 5.166 replPropertyMetaDataBlob (version 1): version, reserved, count, reserved, then per
# attribute: attrType, dwVersion, timeChanged, uuidDsaOriginating, usnOriginating, usnProperty.
_METADATA_HEADER = struct.Struct("<IIII")
_METADATA_ENTRY = struct.Struct("<IIQ16sqq")
# ATTRTYP of `name` (the RDN): AD updates its metadata on every rename and every move.
_NAME_ATTRTYP = 0x90001


class EntryError(ValueError):
    """A DirSync entry that cannot become an event."""


class CookieError(ValueError):
    """Bytes that are not a DirSync cookie this reader understands."""


def guid_text(raw: bytes) -> str:
    """objectGUID bytes as AD prints them: the first three fields little-endian."""
    if len(raw) != 16:
        raise ValueError(f"an objectGUID is 16 bytes, got {len(raw)}")
    return str(uuid.UUID(bytes_le=bytes(raw)))


def guid_bytes(text: str) -> bytes:
    """The inverse of :func:`guid_text`."""
    return uuid.UUID(text).bytes_le


def guid_filter(text: str) -> str:
    """An LDAP filter matching the object with this GUID (the value as escaped bytes)."""
    return "(objectGUID=" + "".join(f"\\{byte:02x}" for byte in guid_bytes(text)) + ")"


def cookie_usn(cookie: bytes) -> int:
    """The highest USN a DirSync cookie covers."""
    if len(cookie) < _COOKIE_USN_VECTOR.size or not cookie.startswith(_COOKIE_MAGIC):
        raise CookieError(f"not a DirSync cookie ({len(cookie)} bytes, starts {bytes(cookie[:4])!r})")
    _, _, _, _, _, high_obj, _, high_prop = _COOKIE_USN_VECTOR.unpack_from(cookie)
    return max(high_obj, high_prop)


def usn_position(usn: int) -> str:
    return f"{usn:020d}"


def encode_cookie(cookie: bytes) -> str:
    return base64.b64encode(cookie).decode("ascii")


def decode_cookie(position: str) -> bytes:
    try:
        cookie = base64.b64decode(position, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CookieError(f"position is not base64: {exc}") from None
    cookie_usn(cookie)
    return cookie


@dataclass(frozen=True, slots=True)
class DirSyncEntry:
    """One object as a DirSync search returned it."""

    object_id: str
    dn: str
    raw: RawAttributes

    @property
    def deleted(self) -> bool:
        return any(v.upper() == b"TRUE" for v in _values(self.raw, "isDeleted"))

    @property
    def created(self) -> bool:
        return bool(_values(self.raw, "whenCreated"))

    @property
    def renamed(self) -> bool:
        return bool(_values(self.raw, "name") or _values(self.raw, "parentGUID"))

    @property
    def kind(self) -> ObjectKind | None:
        classes = [v.decode("utf-8", errors="replace") for v in _values(self.raw, "objectClass")]
        return classify(classes) if classes else None


@dataclass(frozen=True, slots=True)
class ValueRange:
    """Part of a value list, as an attribute option names it: ``member;range=0-1499``.

    DirSync's incremental values use two fixed ranges (see :func:`entry_modifications`); a plain
    search gets the values of a list longer than the DC's MaxValRange one range at a time, and
    asks for the next one from ``high + 1``.
    """

    attribute: str
    low: int
    high: int | None  # None: "*", the list's last part

    def next_request(self) -> str:
        if self.high is None:
            raise ValueError(f"{self.attribute};range={self.low}-* is the last part of its values")
        return f"{self.attribute};range={self.high + 1}-*"


def value_range(name: str) -> ValueRange | None:
    """The range an attribute description names, or None for a plain attribute."""
    match = _RANGE.match(name)
    if match is None:
        return None
    return ValueRange(match["name"], int(match["low"]), None if match["high"] == "*" else int(match["high"]))


def parse_entry(dn: str, raw: RawAttributes) -> DirSyncEntry:
    guids = _values(raw, "objectGUID")
    if len(guids) != 1:
        raise EntryError(f"entry {dn!r} has {len(guids)} objectGUID values, expected 1")
    try:
        object_id = guid_text(guids[0])
    except ValueError as exc:
        raise EntryError(f"entry {dn!r}: {exc}") from None
    return DirSyncEntry(object_id=object_id, dn=dn, raw=raw)


def to_change(
    forest: str,
    entry: DirSyncEntry,
    *,
    position: str,
    changed_at: str,
    previous_dn: str | None = None,
) -> DirectoryChange:
    """The event for one entry; `previous_dn` is where the caller last saw the object, if known."""
    common = {"forest": forest, "object_id": entry.object_id, "position": position, "changed_at": changed_at}
    if entry.deleted:
        return DirectoryChange(
            op=ChangeOp.DELETE, dn=previous_dn or tombstone_origin(entry) or entry.dn, **common
        )
    if entry.created:
        return DirectoryChange(
            op=ChangeOp.ADD, dn=entry.dn, kind=entry.kind, attributes=added_attributes(entry), **common
        )
    modifications = entry_modifications(entry)
    if entry.renamed and previous_dn is not None and not same_dn(previous_dn, entry.dn):
        return DirectoryChange(
            op=ChangeOp.MOVE, dn=entry.dn, old_dn=previous_dn, modifications=modifications, **common
        )
    return DirectoryChange(op=ChangeOp.MODIFY, dn=entry.dn, modifications=modifications, **common)


def added_attributes(entry: DirSyncEntry) -> dict[str, tuple[str, ...]]:
    """Every value of a new object; the naming attribute comes from `name` (DirSync omits it)."""
    collected: dict[str, list[bytes]] = {}
    spelling: dict[str, str] = {}
    for name, values in entry.raw.items():
        base, removed = _range(name)
        if removed or not values or _ignored(base):
            continue
        key = base.lower()
        spelling.setdefault(key, base)
        collected.setdefault(key, []).extend(values)
    rdn_type, rdn_value = _rdn(entry)
    if rdn_type and rdn_value is not None:
        spelling.setdefault(rdn_type.lower(), rdn_type)
        collected[rdn_type.lower()] = [rdn_value.encode("utf-8")]
    attributes: dict[str, tuple[str, ...]] = {}
    for key, values in collected.items():
        name, texts = encode_values(spelling[key], values)
        attributes[name] = texts
    return attributes


def entry_modifications(entry: DirSyncEntry) -> tuple[Modification, ...]:
    """What changed on an existing object: ranged values added or removed, whole attributes
    replaced, attributes sent without values cleared."""
    modifications: list[Modification] = []
    for name, values in entry.raw.items():
        base, removed = _range(name)
        if _ignored(base):
            continue
        if not values:
            cleared = base + BINARY_SUFFIX if base.lower() in BINARY_ATTRIBUTES else base
            modifications.append(Modification(attribute=cleared, op=ModOp.DELETE))
            continue
        attribute, texts = encode_values(base, values)
        if removed is None:
            op = ModOp.REPLACE
        else:
            op = ModOp.DELETE if removed else ModOp.ADD
        modifications.append(Modification(attribute=attribute, op=op, values=texts))
    if entry.renamed:
        rdn_type, rdn_value = _rdn(entry)
        named = {m.attribute.lower() for m in modifications}
        if rdn_type and rdn_value is not None and rdn_type.lower() not in named:
            modifications.append(Modification(attribute=rdn_type, op=ModOp.REPLACE, values=(rdn_value,)))
    return tuple(modifications)


def encode_values(name: str, values: Sequence[bytes]) -> tuple[str, tuple[str, ...]]:
    """An attribute's values as event text, all under one name: plain UTF-8 text, or base64
    under name;base64 when the attribute is binary or any value is not UTF-8."""
    if name.lower() not in BINARY_ATTRIBUTES:
        encoded = [attribute_value(name, bytes(value)) for value in values]
        if all(key == name for key, _ in encoded):
            return name, tuple(_strip_extended_dn(text) for _, text in encoded)
    return name + BINARY_SUFFIX, tuple(base64.b64encode(bytes(value)).decode("ascii") for value in values)


def tombstone_origin(entry: DirSyncEntry) -> str | None:
    """The DN a deleted object had: its RDN value (before the DEL mark) under lastKnownParent."""
    names, parents = _values(entry.raw, "name"), _values(entry.raw, "lastKnownParent")
    if not names or not parents:
        return None
    value = names[0].decode("utf-8", errors="replace").split(_TOMBSTONE_MARK, 1)[0]
    parent = _strip_extended_dn(parents[0].decode("utf-8", errors="replace"))
    rdn_type = _rdn_type(entry.dn)
    if not rdn_type or not parent:
        return None
    return f"{rdn_type}={escape_rdn_value(value)},{parent}"


def escape_rdn_value(value: str) -> str:
    """RFC 4514 escaping of an RDN value that ldap3 parses back: every special character is
    escaped wherever it stands (ldap3's escape_rdn leaves a '#' after the first character bare,
    which its own parse_dn then refuses)."""
    escaped = []
    for i, char in enumerate(value):
        if char in '\\,+"<>;=#':
            escaped.append("\\" + char)
        elif char == "\x00":
            escaped.append("\\00")
        elif char == " " and i in (0, len(value) - 1):
            escaped.append("\\ ")
        else:
            escaped.append(char)
    return "".join(escaped)


def same_dn(left: str, right: str) -> bool:
    """DN equality as LDAP means it: escaping and the case of types and values do not matter."""
    return within(left, right) and within(right, left)


def entry_usn(entry: DirSyncEntry) -> int:
    """The object's uSNChanged: the local USN of its latest change."""
    values = _values(entry.raw, "uSNChanged")
    if len(values) != 1 or not bytes(values[0]).isdigit():
        raise EntryError(f"entry {entry.dn!r} has no single numeric uSNChanged ({list(values)!r})")
    return int(values[0])


def rdn_usn(entry: DirSyncEntry) -> int | None:
    """The local USN of the object's latest rename or move, from replPropertyMetaData; None when
    the entry does not carry that attribute or it is not a version 1 blob."""
    blobs = _values(entry.raw, "replPropertyMetaData")
    if len(blobs) != 1 or len(blobs[0]) < _METADATA_HEADER.size:
        return None
    blob = bytes(blobs[0])
    version, _, count, _ = _METADATA_HEADER.unpack_from(blob)
    if version != 1 or len(blob) < _METADATA_HEADER.size + count * _METADATA_ENTRY.size:
        return None
    for offset in range(_METADATA_HEADER.size, _METADATA_HEADER.size + count * _METADATA_ENTRY.size,
                        _METADATA_ENTRY.size):
        attribute, _, _, _, _, local_usn = _METADATA_ENTRY.unpack_from(blob, offset)
        if attribute == _NAME_ATTRTYP:
            return local_usn
    return None


def latest_state(
    forest: str,
    entry: DirSyncEntry,
    *,
    position: str,
    changed_at: str,
    previous_dn: str | None = None,
    published: Collection[str] = (),
) -> DirectoryChange:
    """A whole living entry as an event: an ADD, or a MOVE when it was last seen at another DN.

    The metaverse applies a MOVE's modifications to what it holds, so the MOVE replaces every
    attribute the entry has and clears every other one of `published` (the attribute names
    the caller has published for this forest, a superset of what the metaverse holds for it):
    an attribute cleared in the same poll interval as the rename is not left behind.
    """
    change = to_change(forest, entry, position=position, changed_at=changed_at)
    if previous_dn is None or same_dn(previous_dn, entry.dn):
        return change
    present = {name.lower() for name in change.attributes}
    cleared = sorted({name.lower() for name in published} - present)
    modifications = [
        Modification(attribute=name, op=ModOp.REPLACE, values=values) for name, values in change.attributes.items()
    ]
    modifications += [Modification(attribute=name, op=ModOp.DELETE) for name in cleared]
    return replace(change, op=ChangeOp.MOVE, old_dn=previous_dn, attributes={}, modifications=tuple(modifications))


def _rdn(entry: DirSyncEntry) -> tuple[str | None, str | None]:
    names = _values(entry.raw, "name")
    value = names[0].decode("utf-8", errors="replace") if names else None
    return _rdn_type(entry.dn), value


def _rdn_type(dn: str) -> str | None:
    # An attribute type is a name or an OID: it ends at the first "=", and nothing escapes it.
    name, separator, _ = dn.partition("=")
    return name.strip() or None if separator else None


def _range(name: str) -> tuple[str, bool | None]:
    """``member;range=0-0`` -> ("member", True): removed values; 1-1 -> added; no range -> None."""
    part = value_range(name) if ";" in name else None
    if part is None:
        return name, None
    if (part.low, part.high) == (0, 0):
        return part.attribute, True
    if (part.low, part.high) == (1, 1):
        return part.attribute, False
    raise EntryError(f"attribute {name!r}: only incremental ranges 0-0 and 1-1 are expected")


def _ignored(name: str) -> bool:
    key = name.lower()
    return key in IGNORED_ATTRIBUTES or key in SECRET_ATTRIBUTES


def _strip_extended_dn(text: str) -> str:
    return _EXTENDED_DN.sub("", text, count=1) if text.startswith("<") else text


def _values(raw: RawAttributes, name: str) -> Sequence[bytes]:
    # Servers send names as the schema spells them, as these callers do: the exact name first.
    values = raw.get(name)
    if values is None and not isinstance(raw, WireAttributes):  # which looks up any case itself
        wanted = name.lower()
        values = next((values for key, values in raw.items() if key.lower() == wanted), None)
    return values or ()
