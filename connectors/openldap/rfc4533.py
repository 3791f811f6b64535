"""The RFC 4533 (LDAP Content Synchronization) messages that ldap3 cannot encode or decode.

ldap3 sends any control given as ``(oid, criticality, value)`` and hands back unknown response
controls and intermediate responses as raw bytes; this module turns those bytes into values and
back. Pure functions over pyasn1, so every message can be checked against byte vectors without
a server. LDAP's ASN.1 module uses IMPLICIT TAGS, which is why the Sync Info choices are
``[n]`` tags replacing the SEQUENCE tag rather than wrapping it.

Malformed input raises :class:`SyncProtocolError` naming the message, never a pyasn1 error.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import namedtype, namedval, tag, univ

SYNC_REQUEST_OID = "1.3.6.1.4.1.4203.1.9.1.1"
SYNC_STATE_OID = "1.3.6.1.4.1.4203.1.9.1.2"
SYNC_DONE_OID = "1.3.6.1.4.1.4203.1.9.1.3"
SYNC_INFO_OID = "1.3.6.1.4.1.4203.1.9.1.4"

# The result code of a sync search whose cookie the server can no longer serve (RFC 4533 2.3).
E_SYNC_REFRESH_REQUIRED = 4096


class SyncProtocolError(ValueError):
    """A sync control or message that is not what RFC 4533 defines."""


class SyncMode(enum.IntEnum):
    REFRESH_ONLY = 1
    REFRESH_AND_PERSIST = 3


class SyncState(enum.IntEnum):
    PRESENT = 0
    ADD = 1
    MODIFY = 2
    DELETE = 3


class SyncInfoKind(enum.StrEnum):
    NEW_COOKIE = "newcookie"
    REFRESH_DELETE = "refreshDelete"
    REFRESH_PRESENT = "refreshPresent"
    SYNC_ID_SET = "syncIdSet"


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncRequest:
    mode: SyncMode
    cookie: bytes | None = None
    reload_hint: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncStateControl:
    state: SyncState
    entry_uuid: str
    cookie: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncDone:
    cookie: bytes | None = None
    refresh_deletes: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncInfo:
    kind: SyncInfoKind
    cookie: bytes | None = None
    # refreshDelete / refreshPresent only (the RFC's default there is TRUE).
    refresh_done: bool = True
    # syncIdSet only.
    refresh_deletes: bool = False
    entry_uuids: tuple[str, ...] = ()


# --- ASN.1 (RFC 4533 sections 2.2 - 2.5) ---------------------------------------------------------


class _SyncRequestValue(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType(
            "mode",
            univ.Enumerated(namedValues=namedval.NamedValues(("refreshOnly", 1), ("refreshAndPersist", 3))),
        ),
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
        namedtype.DefaultedNamedType("reloadHint", univ.Boolean(False)),
    )


class _SyncStateValue(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType(
            "state",
            univ.Enumerated(
                namedValues=namedval.NamedValues(("present", 0), ("add", 1), ("modify", 2), ("delete", 3))
            ),
        ),
        namedtype.NamedType("entryUUID", univ.OctetString()),
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
    )


class _SyncDoneValue(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
        namedtype.DefaultedNamedType("refreshDeletes", univ.Boolean(False)),
    )


class _RefreshPhase(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
        namedtype.DefaultedNamedType("refreshDone", univ.Boolean(True)),
    )


class _SyncIdSet(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
        namedtype.DefaultedNamedType("refreshDeletes", univ.Boolean(False)),
        namedtype.NamedType("syncUUIDs", univ.SetOf(componentType=univ.OctetString())),
    )


def _context(number: int, constructed: bool) -> tag.Tag:
    return tag.Tag(tag.tagClassContext, tag.tagFormatConstructed if constructed else tag.tagFormatSimple, number)


class _SyncInfoValue(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("newcookie", univ.OctetString().subtype(implicitTag=_context(0, False))),
        namedtype.NamedType("refreshDelete", _RefreshPhase().subtype(implicitTag=_context(1, True))),
        namedtype.NamedType("refreshPresent", _RefreshPhase().subtype(implicitTag=_context(2, True))),
        namedtype.NamedType("syncIdSet", _SyncIdSet().subtype(implicitTag=_context(3, True))),
    )


# Built once: the decoder only reads a spec (it clones it per value), and building one per call
# is a quarter of the cost of decoding a Sync State control, which comes with every entry.
_SYNC_REQUEST_SPEC = _SyncRequestValue()
_SYNC_DONE_SPEC = _SyncDoneValue()
_SYNC_INFO_SPEC = _SyncInfoValue()


# --- Sync Request control (client -> server) -----------------------------------------------------


def sync_request_control(
    mode: SyncMode, cookie: bytes | None = None, *, reload_hint: bool = False
) -> tuple[str, bool, bytes]:
    """The control as ldap3 takes it: critical, since a server ignoring it would answer a plain search."""
    return SYNC_REQUEST_OID, True, encode_sync_request(SyncRequest(mode=mode, cookie=cookie, reload_hint=reload_hint))


def encode_sync_request(request: SyncRequest) -> bytes:
    value = _SyncRequestValue()
    value["mode"] = int(request.mode)
    if request.cookie is not None:
        value["cookie"] = request.cookie
    value["reloadHint"] = request.reload_hint
    return encoder.encode(value)


def decode_sync_request(data: bytes) -> SyncRequest:
    value = _decode(data, _SYNC_REQUEST_SPEC, "Sync Request control")
    return SyncRequest(
        mode=_member(SyncMode, value["mode"], "Sync Request mode"),
        cookie=_optional_bytes(value, "cookie"),
        reload_hint=bool(value["reloadHint"]),
    )


# --- Sync State control (attached to each entry) -------------------------------------------------


def encode_sync_state(control: SyncStateControl) -> bytes:
    value = _SyncStateValue()
    value["state"] = int(control.state)
    value["entryUUID"] = _uuid_bytes(control.entry_uuid)
    if control.cookie is not None:
        value["cookie"] = control.cookie
    return encoder.encode(value)


def decode_sync_state(data: bytes) -> SyncStateControl:
    """Decoded by hand, not by pyasn1: every pushed entry carries one, and pyasn1 took half of
    the push reader's decoding time (bench/reader_to_kafka.py). The layout is fixed: SEQUENCE {
    ENUMERATED, OCTET STRING, OCTET STRING OPTIONAL }, definite lengths (LDAP's BER subset)."""
    what = "Sync State control"
    if not isinstance(data, (bytes, bytearray)):
        raise SyncProtocolError(f"{what}: expected bytes, got {type(data).__name__}")
    if not data:
        raise SyncProtocolError(f"{what}: empty value")
    data = bytes(data)
    body, end = _tlv(data, 0, 0x30, what)
    if end != len(data):
        raise SyncProtocolError(f"{what}: {len(data) - end} bytes after the value")
    state, offset = _tlv(data, body[0], 0x0A, what)
    entry_uuid, offset = _tlv(data, offset, 0x04, what)
    cookie = None
    if offset < body[1]:
        cookie, offset = _tlv(data, offset, 0x04, what)
    if offset != body[1]:
        raise SyncProtocolError(f"{what}: not valid BER: trailing bytes in the SEQUENCE")
    return SyncStateControl(
        state=_member(SyncState, int.from_bytes(data[state[0] : state[1]], "big", signed=True), "Sync State state"),
        entry_uuid=_uuid_text(data[entry_uuid[0] : entry_uuid[1]], "Sync State entryUUID"),
        cookie=None if cookie is None else data[cookie[0] : cookie[1]],
    )


def _tlv(data: bytes, offset: int, expected_tag: int, what: str) -> tuple[tuple[int, int], int]:
    """The (start, end) of the contents of the element at `offset`, which must carry
    `expected_tag`, and the offset after it."""
    if offset + 2 > len(data) or data[offset] != expected_tag:
        raise SyncProtocolError(f"{what}: not valid BER: expected tag 0x{expected_tag:02x} at byte {offset}")
    length, start = data[offset + 1], offset + 2
    if length & 0x80:
        octets = length & 0x7F
        if not 0 < octets <= 4 or start + octets > len(data):
            raise SyncProtocolError(f"{what}: not valid BER: bad length at byte {offset + 1}")
        length, start = int.from_bytes(data[start : start + octets], "big"), start + octets
    end = start + length
    if end > len(data) or (expected_tag == 0x0A and length == 0):
        raise SyncProtocolError(f"{what}: not valid BER: element at byte {offset} runs past the value")
    return (start, end), end


# --- Sync Done control (attached to the searchResultDone) ----------------------------------------


def encode_sync_done(done: SyncDone) -> bytes:
    value = _SyncDoneValue()
    if done.cookie is not None:
        value["cookie"] = done.cookie
    value["refreshDeletes"] = done.refresh_deletes
    return encoder.encode(value)


def decode_sync_done(data: bytes) -> SyncDone:
    value = _decode(data, _SYNC_DONE_SPEC, "Sync Done control")
    return SyncDone(cookie=_optional_bytes(value, "cookie"), refresh_deletes=bool(value["refreshDeletes"]))


# --- Sync Info intermediate message --------------------------------------------------------------


def encode_sync_info(info: SyncInfo) -> bytes:
    value = _SyncInfoValue()
    if info.kind is SyncInfoKind.NEW_COOKIE:
        if info.cookie is None:
            raise SyncProtocolError("Sync Info newcookie needs a cookie")
        value["newcookie"] = info.cookie
        return encoder.encode(value)
    inner = value.componentType[info.kind.value].getType().clone()
    if info.cookie is not None:
        inner["cookie"] = info.cookie
    if info.kind is SyncInfoKind.SYNC_ID_SET:
        inner["refreshDeletes"] = info.refresh_deletes
        uuids = inner["syncUUIDs"]
        for index, text in enumerate(info.entry_uuids):
            uuids[index] = _uuid_bytes(text)
    else:
        inner["refreshDone"] = info.refresh_done
    value[info.kind.value] = inner
    return encoder.encode(value)


def decode_sync_info(data: bytes) -> SyncInfo:
    value = _decode(data, _SYNC_INFO_SPEC, "Sync Info message")
    kind = SyncInfoKind(value.getName())
    inner = value.getComponent()
    if kind is SyncInfoKind.NEW_COOKIE:
        return SyncInfo(kind=kind, cookie=bytes(inner))
    if kind is SyncInfoKind.SYNC_ID_SET:
        return SyncInfo(
            kind=kind,
            cookie=_optional_bytes(inner, "cookie"),
            refresh_deletes=bool(inner["refreshDeletes"]),
            entry_uuids=tuple(_uuid_text(bytes(u), "Sync Info syncUUIDs") for u in inner["syncUUIDs"]),
        )
    return SyncInfo(kind=kind, cookie=_optional_bytes(inner, "cookie"), refresh_done=bool(inner["refreshDone"]))


# --- helpers -------------------------------------------------------------------------------------


def _decode(data: bytes, spec: univ.Sequence | univ.Choice, what: str):
    if not isinstance(data, (bytes, bytearray)):
        raise SyncProtocolError(f"{what}: expected bytes, got {type(data).__name__}")
    if not data:
        raise SyncProtocolError(f"{what}: empty value")
    try:
        value, rest = decoder.decode(bytes(data), asn1Spec=spec)
    except PyAsn1Error as exc:
        raise SyncProtocolError(f"{what}: not valid BER: {exc}") from None
    if rest:
        raise SyncProtocolError(f"{what}: {len(rest)} bytes after the value")
    return value


def _member(kind: type[enum.IntEnum], value: univ.Enumerated | int, what: str):
    try:
        return kind(int(value))
    except ValueError:
        raise SyncProtocolError(f"{what}: unknown value {int(value)}") from None


def _optional_bytes(value: univ.Sequence, name: str) -> bytes | None:
    component = value.getComponentByName(name)
    return bytes(component) if component.isValue else None


def _uuid_text(raw: bytes, what: str) -> str:
    if len(raw) != 16:
        raise SyncProtocolError(f"{what}: a syncUUID is 16 bytes, got {len(raw)}")
    return str(uuid.UUID(bytes=raw))


def _uuid_bytes(text: str) -> bytes:
    try:
        return uuid.UUID(text).bytes
    except ValueError:
        raise SyncProtocolError(f"not a UUID: {text!r}") from None
