"""RFC 4533 codec: byte vectors written out by hand from the RFC's ASN.1 (IMPLICIT TAGS, BER),
one captured from slapd 2.5, round trips, and malformed input."""

import pytest

from connectors.openldap.rfc4533 import (
    SYNC_REQUEST_OID,
    SyncDone,
    SyncInfo,
    SyncInfoKind,
    SyncMode,
    SyncProtocolError,
    SyncRequest,
    SyncState,
    SyncStateControl,
    decode_sync_done,
    decode_sync_info,
    decode_sync_request,
    decode_sync_state,
    encode_sync_done,
    encode_sync_info,
    encode_sync_request,
    encode_sync_state,
    sync_request_control,
)

UUID_TEXT = "00112233-4455-6677-8899-aabbccddeeff"
UUID_BYTES = bytes.fromhex("00112233445566778899aabbccddeeff")
OTHER_UUID_TEXT = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
OTHER_UUID_BYTES = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
SLAPD_COOKIE = b"rid=000,csn=20261122053453.189566Z#000000#000#000000"


def tlv(tag: int, content: bytes) -> bytes:
    assert len(content) < 128  # short-form lengths are enough for these vectors
    return bytes([tag, len(content)]) + content


# --- Sync Request --------------------------------------------------------------------------------


def test_sync_request_refresh_only_without_cookie_is_just_the_mode():
    # SEQUENCE { mode ENUMERATED refreshOnly(1) }; reloadHint FALSE is the DEFAULT and omitted
    assert encode_sync_request(SyncRequest(mode=SyncMode.REFRESH_ONLY)) == bytes.fromhex("30030a0101")


def test_sync_request_refresh_and_persist_with_cookie():
    expected = tlv(0x30, tlv(0x0A, b"\x03") + tlv(0x04, b"abc"))
    request = SyncRequest(mode=SyncMode.REFRESH_AND_PERSIST, cookie=b"abc")
    assert encode_sync_request(request) == expected
    assert decode_sync_request(expected) == request


def test_sync_request_reload_hint_is_encoded_when_true_and_decoded_from_der_true():
    encoded = encode_sync_request(SyncRequest(mode=SyncMode.REFRESH_ONLY, reload_hint=True))
    assert decode_sync_request(encoded).reload_hint is True
    der = tlv(0x30, tlv(0x0A, b"\x01") + tlv(0x01, b"\xff"))
    assert decode_sync_request(der) == SyncRequest(mode=SyncMode.REFRESH_ONLY, reload_hint=True)


def test_sync_request_control_is_a_critical_ldap3_control_triple():
    oid, critical, value = sync_request_control(SyncMode.REFRESH_AND_PERSIST, b"c")
    assert (oid, critical) == (SYNC_REQUEST_OID, True)
    assert decode_sync_request(value) == SyncRequest(mode=SyncMode.REFRESH_AND_PERSIST, cookie=b"c")


@pytest.mark.parametrize(
    "request_",
    [
        SyncRequest(mode=SyncMode.REFRESH_ONLY),
        SyncRequest(mode=SyncMode.REFRESH_AND_PERSIST, cookie=SLAPD_COOKIE),
        SyncRequest(mode=SyncMode.REFRESH_AND_PERSIST, cookie=b"", reload_hint=True),
        SyncRequest(mode=SyncMode.REFRESH_ONLY, cookie=bytes(range(256)), reload_hint=False),
    ],
)
def test_sync_request_round_trip(request_):
    assert decode_sync_request(encode_sync_request(request_)) == request_


# --- Sync State ----------------------------------------------------------------------------------


def test_sync_state_add_with_cookie():
    vector = tlv(0x30, tlv(0x0A, b"\x01") + tlv(0x04, UUID_BYTES) + tlv(0x04, b"c"))
    expected = SyncStateControl(state=SyncState.ADD, entry_uuid=UUID_TEXT, cookie=b"c")
    assert decode_sync_state(vector) == expected
    assert encode_sync_state(expected) == vector


def test_sync_state_delete_without_cookie():
    vector = tlv(0x30, tlv(0x0A, b"\x03") + tlv(0x04, UUID_BYTES))
    assert decode_sync_state(vector) == SyncStateControl(state=SyncState.DELETE, entry_uuid=UUID_TEXT)


def test_sync_state_uuid_is_canonical_lowercase_text():
    vector = tlv(0x30, tlv(0x0A, b"\x02") + tlv(0x04, bytes.fromhex("ABCDEF00112233445566778899AABBCC")))
    assert decode_sync_state(vector).entry_uuid == "abcdef00-1122-3344-5566-778899aabbcc"


@pytest.mark.parametrize("state", list(SyncState))
# A 300-byte cookie needs BER's long length form (two-octet length).
@pytest.mark.parametrize("cookie", [None, b"", SLAPD_COOKIE, SLAPD_COOKIE * 8 + bytes(range(256))[:50]])
def test_sync_state_round_trip(state, cookie):
    control = SyncStateControl(state=state, entry_uuid=OTHER_UUID_TEXT, cookie=cookie)
    assert decode_sync_state(encode_sync_state(control)) == control


# --- Sync Done -----------------------------------------------------------------------------------


def test_sync_done_captured_from_slapd():
    # The searchResDone control of a refreshOnly search against slapd 2.5.13 (DER TRUE is 0xff).
    captured = b"09\x044" + SLAPD_COOKIE + b"\x01\x01\xff"
    assert decode_sync_done(captured) == SyncDone(cookie=SLAPD_COOKIE, refresh_deletes=True)


def test_sync_done_empty_sequence_means_no_cookie_and_present_phase():
    assert decode_sync_done(b"\x30\x00") == SyncDone(cookie=None, refresh_deletes=False)
    assert encode_sync_done(SyncDone()) == b"\x30\x00"


@pytest.mark.parametrize("done", [SyncDone(), SyncDone(cookie=b"x"), SyncDone(cookie=SLAPD_COOKIE, refresh_deletes=True)])
def test_sync_done_round_trip(done):
    assert decode_sync_done(encode_sync_done(done)) == done


# --- Sync Info -----------------------------------------------------------------------------------


def test_sync_info_new_cookie_is_context_tag_0_primitive():
    assert decode_sync_info(b"\x80\x03abc") == SyncInfo(kind=SyncInfoKind.NEW_COOKIE, cookie=b"abc")
    assert encode_sync_info(SyncInfo(kind=SyncInfoKind.NEW_COOKIE, cookie=b"abc")) == b"\x80\x03abc"


def test_sync_info_refresh_delete_defaults_to_refresh_done():
    info = decode_sync_info(b"\xa1\x00")
    assert info == SyncInfo(kind=SyncInfoKind.REFRESH_DELETE, cookie=None, refresh_done=True)


def test_sync_info_refresh_delete_with_cookie_as_slapd_ends_a_refresh():
    info = decode_sync_info(tlv(0xA1, tlv(0x04, SLAPD_COOKIE)))
    assert info.kind is SyncInfoKind.REFRESH_DELETE and info.cookie == SLAPD_COOKIE and info.refresh_done


def test_sync_info_refresh_present_not_done():
    vector = tlv(0xA2, tlv(0x04, b"c") + tlv(0x01, b"\x00"))
    info = decode_sync_info(vector)
    assert info == SyncInfo(kind=SyncInfoKind.REFRESH_PRESENT, cookie=b"c", refresh_done=False)
    assert encode_sync_info(info) == vector


def test_sync_info_sync_id_set_lists_uuids():
    vector = tlv(
        0xA3,
        tlv(0x04, b"y") + tlv(0x01, b"\xff") + tlv(0x31, tlv(0x04, UUID_BYTES) + tlv(0x04, OTHER_UUID_BYTES)),
    )
    assert decode_sync_info(vector) == SyncInfo(
        kind=SyncInfoKind.SYNC_ID_SET, cookie=b"y", refresh_deletes=True, entry_uuids=(UUID_TEXT, OTHER_UUID_TEXT)
    )


def test_sync_info_sync_id_set_may_be_empty_and_without_cookie():
    info = decode_sync_info(tlv(0xA3, tlv(0x31, b"")))
    assert info == SyncInfo(kind=SyncInfoKind.SYNC_ID_SET, cookie=None, refresh_deletes=False, entry_uuids=())


@pytest.mark.parametrize(
    "info",
    [
        SyncInfo(kind=SyncInfoKind.NEW_COOKIE, cookie=SLAPD_COOKIE),
        SyncInfo(kind=SyncInfoKind.REFRESH_DELETE),
        SyncInfo(kind=SyncInfoKind.REFRESH_DELETE, cookie=b"c", refresh_done=False),
        SyncInfo(kind=SyncInfoKind.REFRESH_PRESENT, cookie=SLAPD_COOKIE, refresh_done=True),
        SyncInfo(kind=SyncInfoKind.SYNC_ID_SET, entry_uuids=(UUID_TEXT,)),
        SyncInfo(kind=SyncInfoKind.SYNC_ID_SET, cookie=b"c", refresh_deletes=True, entry_uuids=(UUID_TEXT, OTHER_UUID_TEXT)),
    ],
)
def test_sync_info_round_trip(info):
    assert decode_sync_info(encode_sync_info(info)) == info


def test_sync_info_new_cookie_needs_a_cookie():
    with pytest.raises(SyncProtocolError, match="newcookie needs a cookie"):
        encode_sync_info(SyncInfo(kind=SyncInfoKind.NEW_COOKIE))


# --- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decode", "data", "reason"),
    [
        (decode_sync_request, b"", "Sync Request control: empty value"),
        (decode_sync_request, bytes.fromhex("30050a01"), "Sync Request control: not valid BER"),
        (decode_sync_request, bytes.fromhex("30030a010300"), "Sync Request control: 1 bytes after the value"),
        (decode_sync_request, bytes.fromhex("30030a0102"), "Sync Request mode: unknown value 2"),
        (decode_sync_request, bytes.fromhex("31030a0101"), "Sync Request control: not valid BER"),
        (decode_sync_state, bytes.fromhex("30030a0101"), "Sync State control: not valid BER"),
        (decode_sync_state, tlv(0x30, tlv(0x0A, b"\x07") + tlv(0x04, UUID_BYTES)), "Sync State state: unknown value 7"),
        (decode_sync_state, tlv(0x30, tlv(0x0A, b"\x01") + tlv(0x04, UUID_BYTES[:15])), "16 bytes, got 15"),
        (decode_sync_state, "30030a0101", "expected bytes, got str"),
        (decode_sync_state, tlv(0x30, tlv(0x0A, b"\x01") + tlv(0x04, UUID_BYTES)) + b"\x00", "1 bytes after the value"),
        (decode_sync_state, tlv(0x30, tlv(0x0A, b"\x01") + tlv(0x04, UUID_BYTES) + b"\x01\x01\x00"), "Sync State control: not valid BER"),
        (decode_sync_state, bytes.fromhex("30840a"), "Sync State control: not valid BER"),
        (decode_sync_done, bytes.fromhex("3006040163"), "Sync Done control: not valid BER"),
        (decode_sync_info, b"\xa4\x00", "Sync Info message: not valid BER"),
        (decode_sync_info, b"\x04\x03abc", "Sync Info message: not valid BER"),
        (decode_sync_info, tlv(0xA3, tlv(0x31, tlv(0x04, b"short"))), "Sync Info syncUUIDs: a syncUUID is 16 bytes, got 5"),
        (decode_sync_info, b"\x80\x03ab", "Sync Info message: not valid BER"),
    ],
)
def test_malformed_input_raises_a_clear_error(decode, data, reason):
    with pytest.raises(SyncProtocolError) as raised:
        decode(data)
    assert reason in str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert raised.value.__cause__ is None  # no pyasn1 internals chained into logs


def test_encoding_a_state_with_a_bad_uuid_is_refused():
    with pytest.raises(SyncProtocolError, match="not a UUID"):
        encode_sync_state(SyncStateControl(state=SyncState.ADD, entry_uuid="nope"))
