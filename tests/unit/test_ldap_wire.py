"""Search entries decoded by connectors.ldap.wire equal what ldap3's own decoder makes of them."""

import ldap3
import pytest
from ldap3.protocol.rfc4511 import (
    LDAPDN,
    AttributeDescription,
    AttributeValue,
    Control,
    ControlValue,
    Controls,
    Criticality,
    LDAPMessage,
    LDAPOID,
    MessageID,
    PartialAttribute,
    PartialAttributeList,
    ProtocolOp,
    SearchResultEntry,
    Vals,
)
from ldap3.utils.asn1 import decode_message_fast
from pyasn1.codec.ber import encoder

from connectors.ldap.wire import MalformedMessage, RawAttributes, decode_response, decode_search_entry, message_length


def entry_message(dn: bytes, attributes: dict[str, list[bytes]], *, message_id: int = 5, controls=()) -> bytes:
    entry = SearchResultEntry()
    entry["object"] = LDAPDN(dn)
    partial_attributes = PartialAttributeList()
    for index, (name, values) in enumerate(attributes.items()):
        attribute = PartialAttribute()
        attribute["type"] = AttributeDescription(name)
        vals = Vals()
        for position, value in enumerate(values):
            vals.setComponentByPosition(position, AttributeValue(value))
        attribute["vals"] = vals
        partial_attributes.setComponentByPosition(index, attribute)
    entry["attributes"] = partial_attributes
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    operation = ProtocolOp()
    operation.setComponentByName("searchResEntry", entry)
    message["protocolOp"] = operation
    if controls:
        encoded = Controls()
        for index, (oid, critical, value) in enumerate(controls):
            control = Control()
            control["controlType"] = LDAPOID(oid)
            if critical is not None:
                control["criticality"] = Criticality(critical)
            if value is not None:
                control["controlValue"] = ControlValue(value)
            encoded.setComponentByPosition(index, control)
        message["controls"] = encoded
    return encoder.encode(message)


def ldap3_view(message: bytes) -> dict:
    """The entry as ldap3's fast decoder makes it: dn and raw attribute values."""
    payload = decode_message_fast(message)["payload"]
    attributes = {
        bytes(attribute[3][0][3]).decode(): [bytes(value[3]) for value in attribute[3][1][3]] for attribute in payload[1][3]
    }
    return {"dn": bytes(payload[0][3]).decode(), "raw_attributes": attributes}


ENTRIES = [
    pytest.param(b"reqStart=20261122053453.189566Z,cn=accesslog", {"reqType": [b"modify"], "reqMod": [b"description:= x", b"entryCSN:= 1"]}, id="accesslog record"),
    pytest.param(b"cn=empty,dc=test", {}, id="no attributes"),
    pytest.param(b"cn=bare,dc=test", {"member": []}, id="attribute without values"),
    pytest.param(b"cn=big,dc=test", {"jpegPhoto": [bytes(range(256)) * 4096], "cn": [b"big"]}, id="1 MB value: long-form lengths"),
    pytest.param("cn=Zoë \\2C+\\\"\\<\\>\\;\\#,dc=test".encode(), {"cn": ["Zoë".encode(), b""]}, id="hostile DN, empty value"),
    pytest.param(b"cn=x,dc=test", {"member;range=0-1499": [b"cn=%d" % n for n in range(1500)]}, id="ranged values"),
]


@pytest.mark.parametrize(("dn", "attributes"), ENTRIES)
def test_an_entry_decodes_as_ldap3_decodes_it(dn, attributes):
    message = entry_message(dn, attributes)
    message_id, entry = decode_search_entry(message)
    assert message_id == 5 and entry["type"] == "searchResEntry" and "controls" not in entry
    assert {"dn": entry["dn"], "raw_attributes": dict(entry["raw_attributes"])} == ldap3_view(message)
    assert all(type(value) is bytes for values in entry["raw_attributes"].values() for value in values)


def test_entry_controls_keep_their_raw_values():
    controls = [("1.3.6.1.4.1.4203.1.9.1.2", None, b"0\x03\x0a\x01\x01"), ("1.2.3", True, None), ("1.2.4", False, b"")]
    _, entry = decode_search_entry(entry_message(b"cn=x", {"cn": [b"x"]}, message_id=300, controls=controls))
    assert entry["controls"] == {
        "1.3.6.1.4.1.4203.1.9.1.2": {"description": "", "criticality": False, "value": b"0\x03\x0a\x01\x01"},
        "1.2.3": {"description": "", "criticality": True, "value": None},
        "1.2.4": {"description": "", "criticality": False, "value": b""},
    }


def test_a_dn_that_is_not_utf8_is_kept_as_ldap3_keeps_it():
    _, entry = decode_search_entry(entry_message(b"cn=\xe9t\xe9,dc=test", {}))
    assert entry["dn"] == ldap3.utils.conv.to_unicode(b"cn=\xe9t\xe9,dc=test", from_server=True)


def test_other_responses_go_through_ldap3():
    connection = ldap3.Connection(ldap3.Server("ldap://127.0.0.1:1"))
    done = bytes.fromhex("300c02010765070a010004000400")  # searchResDone, success
    assert decode_response(connection.strategy, done) == (7, connection.strategy.decode_response_fast(decode_message_fast(done)))
    message_id, entry = decode_response(connection.strategy, entry_message(b"cn=x", {"cn": [b"x"]}))
    assert message_id == 5 and entry["raw_attributes"] == {"cn": [b"x"]}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda m: m[:-3], id="cut short"),
        pytest.param(lambda m: m[:-3] + b"\x04\x09ab", id="value runs past its container"),
        pytest.param(lambda m: m.replace(b"\x31", b"\x30", 1), id="values not a SET"),
        pytest.param(lambda m: m + b"\x00", id="trailing octets"),
    ],
)
def test_a_malformed_entry_is_refused(damage):
    message = entry_message(b"cn=x,dc=test", {"cn": [b"x", b"y"]})
    with pytest.raises(MalformedMessage):
        decode_search_entry(damage(message))


def test_message_length_frames_the_stream():
    short = entry_message(b"cn=x", {"cn": [b"x"]})
    long = entry_message(b"cn=big", {"cn": [b"x" * 70000]})
    stream = short + long
    assert message_length(stream) == len(short)
    assert message_length(stream, len(short)) == len(long)
    assert message_length(long[:3]) is None  # the length octets are not all there yet
    assert message_length(b"\x30") is None
    with pytest.raises(MalformedMessage):
        message_length(b"\x30\x80\x00")  # indefinite length: not LDAP (RFC 4511 5.1)


def test_raw_attributes_are_found_whatever_the_case():
    attributes = RawAttributes({"objectClass": [b"person"]})
    assert attributes["objectclass"] == attributes.get("OBJECTCLASS") == [b"person"]
    assert "objectclass" in attributes and "cn" not in attributes and attributes.get("cn") is None
    with pytest.raises(KeyError):
        attributes["cn"]
    assert list(attributes) == ["objectClass"]  # names as the server sent them
