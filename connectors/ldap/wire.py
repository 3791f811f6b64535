"""LDAP responses off the wire: search entries decoded by idsync, everything else by ldap3.

Readers receive search entries by the thousand; ldap3's generic BER decoder builds a tree of
tuples for each and its dict conversion walks it again (with the Sync State control, ~100 µs an
accesslog record on the reference machine). An entry's shape is fixed (RFC 4511 4.5.2), so it is
read here in one pass into the dict ldap3 would make of it, values left as the raw bytes the
server sent. Any other response (a search's result, a bind's, an intermediate response) is rare
and goes through ldap3 unchanged.
"""

from __future__ import annotations

from ldap3.utils.asn1 import decode_message_fast
from ldap3.utils.conv import to_unicode

_SEQUENCE, _SET, _OCTET_STRING, _BOOLEAN = 0x30, 0x31, 0x04, 0x01
_SEARCH_RESULT_ENTRY = 0x64  # [APPLICATION 4], constructed
_CONTROLS = 0xA0  # [0], constructed


class MalformedMessage(ValueError):
    """Bytes that are not the LDAP message they claim to be."""


class RawAttributes(dict):
    """Attribute name -> raw values, names as the server sent them, looked up regardless of case
    (LDAP attribute descriptions are case-insensitive). A plain dict for every name spelled as
    sent, which is how the readers look them up; only a miss scans."""

    __slots__ = ()

    def __missing__(self, name: str) -> list[bytes]:
        lowered = name.lower()
        for key, values in self.items():
            if key.lower() == lowered:
                return values
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        if dict.__contains__(self, name):
            return True
        if not isinstance(name, str):
            return False
        lowered = name.lower()
        return any(key.lower() == lowered for key in self)

    def get(self, name: str, default=None):
        try:
            return self[name]
        except KeyError:
            return default


def message_length(buffer: bytes | bytearray, start: int = 0) -> int | None:
    """The length of the message beginning at `start` (its header included), or None while the
    buffer does not yet hold its header."""
    if len(buffer) - start < 2:
        return None
    first = buffer[start + 1]
    if first < 0x80:
        return first + 2
    count = first & 0x7F
    if count == 0 or count > 4:
        raise MalformedMessage(f"LDAP message with a length of {count} octets")
    if len(buffer) - start < 2 + count:
        return None
    return int.from_bytes(buffer[start + 2 : start + 2 + count], "big") + 2 + count


def decode_response(strategy, message: bytes) -> tuple[int, dict]:
    """(messageID, the response as ldap3's `strategy` makes it); a search entry's attributes in
    ``raw_attributes`` only, as RawAttributes, and its controls undecoded (``value`` raw)."""
    if protocol_op_tag(message) == _SEARCH_RESULT_ENTRY:
        return decode_search_entry(message)
    decoded = decode_message_fast(message)
    return decoded["messageID"], strategy.decode_response_fast(decoded)


def decode_search_entry(message: bytes) -> tuple[int, dict]:
    """(messageID, {"type", "dn", "raw_attributes"[, "controls"]}) of a searchResEntry message."""
    try:
        return _search_entry(message)
    except IndexError:
        raise MalformedMessage("LDAP message ends inside an element") from None


def _search_entry(data: bytes) -> tuple[int, dict]:
    end = len(data)
    start, stop = _element(data, 0, _SEQUENCE, end)
    if stop != end:
        raise MalformedMessage("LDAP message length does not match its octets")
    id_start, id_stop = _element(data, start, 0x02, stop)
    message_id = int.from_bytes(data[id_start:id_stop], "big", signed=True)
    op_start, op_stop = _element(data, id_stop, _SEARCH_RESULT_ENTRY, stop)
    dn_start, dn_stop = _element(data, op_start, _OCTET_STRING, op_stop)
    attributes = RawAttributes()
    list_start, list_stop = _element(data, dn_stop, _SEQUENCE, op_stop)
    position = list_start
    while position < list_stop:
        attribute_start, attribute_stop = _element(data, position, _SEQUENCE, list_stop)
        type_start, type_stop = _element(data, attribute_start, _OCTET_STRING, attribute_stop)
        values_start, values_stop = _element(data, type_stop, _SET, attribute_stop)
        values = []
        while values_start < values_stop:
            value_start, value_stop = _element(data, values_start, _OCTET_STRING, values_stop)
            values.append(data[value_start:value_stop])
            values_start = value_stop
        attributes[_text(data[type_start:type_stop])] = values
        position = attribute_stop
    entry = {"type": "searchResEntry", "dn": _text(data[dn_start:dn_stop]), "raw_attributes": attributes}
    if op_stop < stop:
        entry["controls"] = _controls(data, op_stop, stop)
    return message_id, entry


def _controls(data: bytes, start: int, stop: int) -> dict[str, dict]:
    """{oid: {"description", "criticality", "value"}}, values undecoded."""
    controls = {}
    position, end = _element(data, start, _CONTROLS, stop)
    while position < end:
        control_start, control_stop = _element(data, position, _SEQUENCE, end)
        oid_start, oid_stop = _element(data, control_start, _OCTET_STRING, control_stop)
        cursor = oid_stop
        criticality, value = False, None
        if cursor < control_stop and data[cursor] == _BOOLEAN:
            flag_start, cursor = _element(data, cursor, _BOOLEAN, control_stop)
            criticality = data[flag_start:cursor] != b"\x00"
        if cursor < control_stop:
            value_start, cursor = _element(data, cursor, _OCTET_STRING, control_stop)
            value = data[value_start:cursor]
        controls[_text(data[oid_start:oid_stop])] = {"description": "", "criticality": criticality, "value": value}
        position = control_stop
    return controls


def _element(data: bytes, position: int, tag: int, limit: int) -> tuple[int, int]:
    """(start, stop) of the value of the element at `position`, which must carry `tag` and end
    by `limit`."""
    if data[position] != tag:
        raise MalformedMessage(f"expected tag {tag:#04x} at octet {position}, found {data[position]:#04x}")
    first = data[position + 1]
    if first < 0x80:
        start = position + 2
        stop = start + first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise MalformedMessage(f"element at octet {position} with a length of {count} octets")
        start = position + 2 + count
        stop = start + int.from_bytes(data[position + 2 : start], "big")
    if stop > limit:
        raise MalformedMessage(f"element at octet {position} runs past its container")
    return start, stop


def protocol_op_tag(message: bytes) -> int | None:
    """The tag of the message's protocolOp, after the envelope and the messageID."""
    try:
        start, _ = _element(message, 0, _SEQUENCE, len(message))
        _, id_stop = _element(message, start, 0x02, len(message))
        return message[id_stop]
    except (IndexError, MalformedMessage):
        return None  # for ldap3's decoder to report


def _text(value: bytes) -> str:
    # As ldap3's to_unicode: DNs and attribute names are UTF-8 by RFC 4511, some servers send
    # other encodings in DNs.
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return to_unicode(value, from_server=True)
