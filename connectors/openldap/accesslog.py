"""Decoding OpenLDAP accesslog records (slapo-accesslog) into directory change events.

Pure functions: the readers in :mod:`connectors.openldap.accesslog_poll` and
:mod:`connectors.openldap.syncrepl` feed them the raw attributes of ``auditWriteObject`` entries.  A
record's position is its ``entryCSN``, the CSN of the write it logs
(``YYYYmmddHHMMSS.ffffffZ#count#sid#mod``): unique, and ordered as a string in the order the writes
committed.  Its ``reqStart`` (when the write arrived) is the change's time only: writes commit in
another order than they arrive, and a position out of commit order makes the metaverse drop a change
as older than one it already holds.  Snapshot positions are times (``YYYYmmddHHMMSS.000000Z``) and
compare with CSNs by their time.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Mapping, Sequence

from ldap3.utils.dn import parse_dn

from connectors.ldap.values import (
    GENERALIZED_TIME,
    RecordError,
    attribute_value,
    position_at,
    position_minus,
    unescape,
)
from streams.events import ChangeOp, DirectoryChange, Modification, ModOp, classify

# Maintained by the server; never part of what a person changed.
OPERATIONAL_ATTRIBUTES = frozenset(
    name.lower()
    for name in (
        "entryUUID",
        "entryCSN",
        "entryDN",
        "structuralObjectClass",
        "creatorsName",
        "createTimestamp",
        "modifiersName",
        "modifyTimestamp",
        "contextCSN",
        "hasSubordinates",
        "subschemaSubentry",
        "memberOf",
    )
)

_MOD_OPS = {"+": ModOp.ADD, "-": ModOp.DELETE, "=": ModOp.REPLACE}
# Makes a time a whole CSN, the least of its microsecond: slapd evaluates an entryCSN filter whose
# value is not a whole CSN as Undefined (no match, no error).
_CSN_TAIL = "#000000#000#000000"

RawAttributes = Mapping[str, Sequence[bytes]]


def decode_record(forest: str, raw: RawAttributes) -> DirectoryChange | None:
    """The change an accesslog record describes, or None for operations idsync ignores."""
    req_mods = next((values for name, values in raw.items() if name.lower() == "reqmod"), ())
    attrs = {
        name.lower(): [_text(name, v) for v in values] for name, values in raw.items() if name.lower() != "reqmod"
    }
    req_type = _single(attrs, "reqtype")
    dn = _single(attrs, "reqdn")
    object_id = _first(attrs, "reqentryuuid")
    common = {
        "forest": forest,
        "position": _single(attrs, "entrycsn"),
        "changed_at": iso_time(_single(attrs, "reqstart")),
    }
    if req_type == "add":
        values = _added_values(req_mods)
        object_id = object_id or _first(values, "entryuuid")
        if not object_id:
            raise RecordError(f"add of {dn!r} carries no entryUUID")
        user_values = {k: v for k, v in values.items() if k.lower() not in OPERATIONAL_ATTRIBUTES}
        return DirectoryChange(
            op=ChangeOp.ADD,
            object_id=object_id,
            dn=dn,
            kind=classify(_values_of(user_values, "objectclass")),
            attributes={k: tuple(v) for k, v in user_values.items()},
            **common,
        )
    if not object_id:
        raise RecordError(f"{req_type} of {dn!r} carries no reqEntryUUID")
    if req_type == "modify":
        return DirectoryChange(
            op=ChangeOp.MODIFY,
            object_id=object_id,
            dn=dn,
            modifications=parse_modifications(req_mods),
            **common,
        )
    if req_type == "delete":
        return DirectoryChange(op=ChangeOp.DELETE, object_id=object_id, dn=dn, **common)
    if req_type == "modrdn":
        return _move(dn, attrs, object_id, common)
    return None


def parse_modifications(req_mods: Sequence[bytes]) -> tuple[Modification, ...]:
    """Group ``attr:<op> value`` lines into modifications, dropping operational attributes."""
    grouped: list[Modification] = []
    for line in req_mods:
        name, op, value = _split_req_mod(line)
        if name.lower() in OPERATIONAL_ATTRIBUTES or op is None:
            continue
        values = (value,) if value is not None else ()
        last = grouped[-1] if grouped else None
        if last is not None and last.attribute == name and last.op is op:
            grouped[-1] = Modification(attribute=name, op=op, values=last.values + values)
        else:
            grouped.append(Modification(attribute=name, op=op, values=values))
    return tuple(grouped)


def record_csn(raw: RawAttributes) -> str | None:
    """The record's entryCSN, its position; None if it has none."""
    values = next((values for name, values in raw.items() if name.lower() == "entrycsn"), ())
    return bytes(values[0]).decode("ascii", "replace") if values else None


def csn_lower_bound(position: str, overlap_seconds: float) -> str:
    """The least CSN a poll from `position` may still have to read.

    A CSN is its own bound. A position without one is a time: a reqStart or a snapshot's time
    stored before positions were CSNs. The reader that stored it re-checked the overlap window
    before it for writes that committed late, and may have stopped before doing so: the bound is
    that window's start. What is read again is applied again in commit order, which leaves the
    metaverse as it was.
    """
    if "#" in position:
        return position
    return position_minus(position, overlap_seconds) + _CSN_TAIL


def csn_after(csn: str, seconds: float) -> str:
    """The least CSN `seconds` after `csn`'s time (to the microsecond)."""
    moment = datetime.strptime(csn[:21], GENERALIZED_TIME + ".%f") + timedelta(seconds=seconds)
    return f"{moment:{GENERALIZED_TIME}.%f}Z{_CSN_TAIL}"


def snapshot_position(overlap_seconds: float) -> str:
    """The position of a snapshot's changes: this host's time, moved back by the overlap window so
    that a change logged while the snapshot is read is newer (clocks agreeing within the window).
    A time, not a CSN: after a restore the log's CSNs may be older than what the metaverse holds,
    and the snapshot must still win."""
    return position_minus(position_at(datetime.now(timezone.utc)), overlap_seconds)


def iso_time(stamp: str) -> str:
    """``YYYYmmddHHMMSS...`` as ISO 8601 UTC to the second; by slicing, as it runs once per change."""
    if len(stamp) < 14 or not stamp[:14].isdigit():
        raise RecordError(f"not a generalized time: {stamp[:40]!r}")
    s = stamp
    return f"{s[0:4]}-{s[4:6]}-{s[6:8]}T{s[8:10]}:{s[10:12]}:{s[12:14]}Z"


def _move(dn: str, attrs: Mapping[str, list[str]], object_id: str, common: dict) -> DirectoryChange:
    new_rdn = _single(attrs, "reqnewrdn")
    new_dn = _first(attrs, "reqnewdn")
    parent = _first(attrs, "reqnewsuperior") or _parent_dn(dn)
    if not new_dn:
        new_dn = f"{new_rdn},{parent}" if parent else new_rdn
    # The RDN attribute values change with the name: express it as modifications so the
    # metaverse keeps the entry's attributes consistent with its DN.
    modifications = [
        Modification(attribute=name, op=ModOp.ADD, values=(value,)) for name, value in _rdn_values(new_rdn)
    ]
    if _first(attrs, "reqdeleteoldrdn") == "TRUE":
        new_values = set(_rdn_values(new_rdn))
        modifications += [
            Modification(attribute=name, op=ModOp.DELETE, values=(value,))
            for name, value in _rdn_values(_rdn_of(dn))
            if (name, value) not in new_values
        ]
    return DirectoryChange(
        op=ChangeOp.MOVE,
        object_id=object_id,
        dn=new_dn,
        old_dn=dn,
        modifications=tuple(modifications),
        **common,
    )


def _split_req_mod(line: bytes) -> tuple[str, ModOp | None, str | None]:
    """``attr:<op> value`` -> (attribute, op, value); a binary value comes back base64-encoded
    under the attribute name with BINARY_SUFFIX, so no value is ever dropped or mangled."""
    name_part, sep, rest = bytes(line).partition(b":")
    try:
        name = name_part.decode("ascii")
    except UnicodeDecodeError:
        raise RecordError(f"malformed reqMod {line[:80]!r}") from None
    if not sep or not rest or not name:
        raise RecordError(f"malformed reqMod {line[:80]!r}")
    op = _MOD_OPS.get(chr(rest[0]))  # '#' (increment) and others are not identity data
    if len(rest) <= 1:
        return name, op, None
    name, value = attribute_value(name, rest[2:])
    return name, op, value


def _added_values(req_mods: Sequence[bytes]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in req_mods:
        name, _, value = _split_req_mod(line)
        if value is not None:
            values.setdefault(name, []).append(value)
    return values


def _rdn_values(rdn: str) -> list[tuple[str, str]]:
    return [(name, unescape(value)) for name, value, _ in parse_dn(rdn)]


def _rdn_of(dn: str) -> str:
    components = parse_dn(dn)
    rdn = []
    for name, value, separator in components:
        rdn.append(f"{name}={value}")
        if separator != "+":
            break
    return "+".join(rdn)


def _parent_dn(dn: str) -> str:
    components = parse_dn(dn)
    for index, (_, _, separator) in enumerate(components):
        if separator != "+":
            return ",".join(f"{n}={v}" for n, v, _ in components[index + 1 :])
    return ""


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"attribute {name!r} holds a value that is not UTF-8 text") from exc


def _single(attrs: Mapping[str, list[str]], name: str) -> str:
    values = attrs.get(name)
    if not values:
        raise RecordError(f"accesslog record has no {name}")
    return values[0]


def _values_of(attrs: Mapping[str, Sequence[str]], name: str) -> Sequence[str]:
    return next((values for key, values in attrs.items() if key.lower() == name), ())


def _first(attrs: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = _values_of(attrs, name)
    return values[0] if values else None
