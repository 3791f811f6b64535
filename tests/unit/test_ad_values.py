"""DirSync entries -> change events, with raw values shaped as Samba 4.17's DirSync returned them."""

from __future__ import annotations

import base64
import os

import pytest

from connectors.ad.values import (
    CookieError,
    EntryError,
    ValueRange,
    cookie_usn,
    decode_cookie,
    encode_cookie,
    encode_values,
    escape_rdn_value,
    guid_bytes,
    guid_filter,
    guid_text,
    parse_entry,
    same_dn,
    to_change,
    usn_position,
    value_range,
)
from ldap3.utils.dn import parse_dn

from streams.events import ChangeOp, DirectoryChange, Modification, ModOp, ObjectKind

BASE = "DC=alpha,DC=idsync,DC=test"
# A Samba DC named this object's tombstone "...\nDEL:e783e3c5-3bfd-441a-825a-a2c241436ca9": the
# server's own text form of these objectGUID bytes.
GUID_RAW = b"\xc5\xe3\x83\xe7\xfd;\x1aD\x82Z\xa2\xc2ACl\xa9"
GUID = "e783e3c5-3bfd-441a-825a-a2c241436ca9"
# A cookie a Samba DC returned; its USN vector says 3991 (0x0f97).
COOKIE = base64.b64decode(
    "TVNEUwMAAACANfSWQnrdAQAAAAAAAAAAKAAAAJcPAAAAAAAAAAAAAAAAAACXDwAAAAAAAByWERBJaqpMmKubLkwHb74BAAAAAAAAAAEA"
    "AAAAAAAAHJYREElqqkyYq5suTAdvvpcPAAAAAAAA"
)
SID = b"\x01\x05\x00\x00\x00\x00\x00\x05\x15\x00\x00\x00<*\x893\x81\xc1K\x95\xb1\xe5sGP\x04\x00\x00"


def change(dn: str, raw: dict, previous_dn: str | None = None) -> DirectoryChange:
    return to_change(
        "alpha",
        parse_entry(dn, {"objectGUID": [GUID_RAW], "instanceType": [b"4"], **raw}),
        position=usn_position(4000),
        changed_at="2026-11-22T05:30:00Z",
        previous_dn=previous_dn,
    )


def new_user_raw(name: bytes = b"Ann", **extra: list[bytes]) -> dict:
    return {
        "parentGUID": [b"\xec\x93$\xb3\x16\x0frF\x95$\xf4\xf02\xc6x\xdb"],
        "nTSecurityDescriptor": [b"\x01\x00\x17\x8c\x14\x00\x00\x00"],
        "objectCategory": [
            b"<GUID=9cae5c15-b099-4856-b2ab-8b9b221caff1>;CN=Person,CN=Schema,CN=Configuration," + BASE.encode()
        ],
        "objectSid": [SID],
        "sAMAccountName": [b"ann"],
        "mail": [b"ann@corp.test"],
        "name": [name],
        "whenCreated": [b"20261122053130.0Z"],
        "objectClass": [b"top", b"person", b"organizationalPerson", b"user"],
        "unicodePwd": None,
        "dBCSPwd": None,
        **extra,
    }


class TestGuid:
    def test_known_vector_in_both_directions(self) -> None:
        assert guid_text(GUID_RAW) == GUID
        assert guid_bytes(GUID) == GUID_RAW
        assert guid_bytes(GUID.upper()) == GUID_RAW

    def test_every_byte_value_survives_the_round_trip(self) -> None:
        for raw in [bytes(range(16)), bytes(range(240, 256)), b"\x00" * 16, b"\xff" * 16, os.urandom(16)]:
            assert guid_bytes(guid_text(raw)) == raw

    @pytest.mark.parametrize("raw", [b"", b"\x00" * 15, b"\x00" * 17])
    def test_refuses_a_value_that_is_not_16_bytes(self, raw: bytes) -> None:
        with pytest.raises(ValueError, match="16 bytes"):
            guid_text(raw)

    def test_filter_matches_the_stored_bytes(self) -> None:
        assert guid_filter(GUID) == "(objectGUID=\\c5\\e3\\83\\e7\\fd\\3b\\1a\\44\\82\\5a\\a2\\c2\\41\\43\\6c\\a9)"


class TestCookie:
    def test_usn_of_a_real_cookie(self) -> None:
        assert cookie_usn(COOKIE) == 3991

    def test_position_text_round_trip(self) -> None:
        assert decode_cookie(encode_cookie(COOKIE)) == COOKIE

    @pytest.mark.parametrize("text", ["not base64!", encode_cookie(b"XXXX" + COOKIE[4:]), encode_cookie(COOKIE[:30])])
    def test_refuses_what_is_not_a_cookie(self, text: str) -> None:
        with pytest.raises(CookieError):
            decode_cookie(text)

    def test_positions_sort_as_text_like_numbers(self) -> None:
        usns = [0, 9, 10, 99, 100, 3991, 10**12, 2**63]
        assert sorted(usns, key=usn_position) == usns
        assert sorted(map(usn_position, usns)) == [usn_position(u) for u in usns]
        assert len(usn_position(2**63)) == 20


class TestAdd:
    def test_new_user_is_an_add_of_its_public_values(self) -> None:
        event = change(f"CN=Ann,OU=T1,{BASE}", new_user_raw(**{"member;range=1-1": [b"CN=x," + BASE.encode()]}))
        assert event.op is ChangeOp.ADD
        assert event.object_id == GUID
        assert event.kind is ObjectKind.USER
        assert event.dn == f"CN=Ann,OU=T1,{BASE}"
        assert event.position == "00000000000000004000"
        attributes = dict(event.attributes)
        # DirSync never sends the naming attribute: it comes from `name`.
        assert attributes["CN"] == ("Ann",)
        assert attributes["mail"] == ("ann@corp.test",)
        assert attributes["objectSid;base64"] == (base64.b64encode(SID).decode(),)
        assert attributes["objectCategory"] == (f"CN=Person,CN=Schema,CN=Configuration,{BASE}",)
        assert attributes["member"] == (f"CN=x,{BASE}",)
        assert attributes["objectClass"] == ("top", "person", "organizationalPerson", "user")
        for absent in ("objectGUID", "parentGUID", "instanceType", "nTSecurityDescriptor", "whenCreated",
                       "unicodePwd", "dBCSPwd"):
            assert absent not in attributes

    def test_object_read_by_a_plain_search_carries_only_what_dirsync_keeps_up_to_date(self) -> None:
        raw = new_user_raw(
            cn=[b"Ann"],
            distinguishedName=[f"CN=Ann,OU=T1,{BASE}".encode()],
            uSNChanged=[b"4012"],
            whenChanged=[b"20261122053131.0Z"],
            lastLogon=[b"0"],
            logonCount=[b"3"],
            memberOf=[f"CN=G,{BASE}".encode()],
            manager=[f"CN=Boss,{BASE}".encode()],
        )
        event = change(f"CN=Ann,OU=T1,{BASE}", raw)
        assert event.op is ChangeOp.ADD
        assert event.attributes["cn"] == ("Ann",)
        assert event.attributes["manager"] == (f"CN=Boss,{BASE}",)
        assert not {"distinguishedName", "uSNChanged", "whenChanged", "lastLogon", "logonCount", "memberOf"} & set(
            event.attributes
        )

    def test_removed_link_values_of_a_new_object_are_not_its_values(self) -> None:
        raw = new_user_raw(**{"member;range=1-1": [b"CN=a"], "member;range=0-0": [b"CN=b"]})
        raw["objectClass"] = [b"top", b"group"]
        event = change(f"CN=G,OU=T1,{BASE}", raw)
        assert event.kind is ObjectKind.GROUP
        assert event.attributes["member"] == ("CN=a",)

    def test_a_computer_is_not_a_user(self) -> None:
        raw = new_user_raw(name=b"PC1", objectClass=[b"top", b"person", b"organizationalPerson", b"user", b"computer"])
        assert change(f"CN=PC1,OU=T1,{BASE}", raw).kind is ObjectKind.OTHER

    def test_event_survives_encoding(self) -> None:
        event = change(f"CN=Ann,OU=T1,{BASE}", new_user_raw())
        assert DirectoryChange.from_bytes(event.to_bytes()) == event


class TestModify:
    def test_changed_and_cleared_attributes(self) -> None:
        event = change(
            f"CN=Ann,OU=T1,{BASE}",
            {"displayName": [b"Ann B"], "otherTelephone": [b"1", b"2"], "mail": None, "objectSid": []},
        )
        assert event.op is ChangeOp.MODIFY
        assert event.kind is None
        assert event.modifications == (
            Modification(attribute="displayName", op=ModOp.REPLACE, values=("Ann B",)),
            Modification(attribute="otherTelephone", op=ModOp.REPLACE, values=("1", "2")),
            Modification(attribute="mail", op=ModOp.DELETE),
            Modification(attribute="objectSid;base64", op=ModOp.DELETE),
        )

    def test_ranged_member_values_are_added_and_removed_values(self) -> None:
        event = change(
            f"CN=G1,OU=T1,{BASE}",
            {
                "member;range=0-0": [b"CN=Bob,OU=T1," + BASE.encode()],
                "member;range=1-1": [b"CN=Ann,OU=T2," + BASE.encode()],
            },
        )
        assert event.modifications == (
            Modification(attribute="member", op=ModOp.DELETE, values=(f"CN=Bob,OU=T1,{BASE}",)),
            Modification(attribute="member", op=ModOp.ADD, values=(f"CN=Ann,OU=T2,{BASE}",)),
        )

    def test_a_range_other_than_incremental_values_is_refused(self) -> None:
        with pytest.raises(EntryError, match="member;range=0-1499"):
            change(f"CN=G1,{BASE}", {"member;range=0-1499": [b"CN=a"]})

    def test_binary_values_are_lossless_and_spelt_one_way(self) -> None:
        photo = b"\xff\xd8\xff\xe0 not utf-8"
        assert encode_values("jpegPhoto", [b"ascii-looking", photo]) == (
            "jpegPhoto;base64",
            (base64.b64encode(b"ascii-looking").decode(), base64.b64encode(photo).decode()),
        )
        # An attribute of unknown syntax: base64 as soon as one value is not text, all values alike.
        name, values = encode_values("x-blob", [b"text", b"\x80\x81"])
        assert name == "x-blob;base64"
        assert [base64.b64decode(v) for v in values] == [b"text", b"\x80\x81"]
        assert encode_values("description", ["é ü 中".encode()]) == ("description", ("é ü 中",))


class TestRenameAndMove:
    raw = {"parentGUID": [b"\xc2R\xf1+6\xa4\x12N\x8a%v\x8d\xfe\x89\xca\xf0"], "name": [b"Ann2"]}

    def test_known_previous_dn_makes_a_move_that_renames_cn(self) -> None:
        event = change(f"CN=Ann2,OU=T2,{BASE}", self.raw, previous_dn=f"CN=Ann,OU=T1,{BASE}")
        assert event.op is ChangeOp.MOVE
        assert (event.old_dn, event.dn) == (f"CN=Ann,OU=T1,{BASE}", f"CN=Ann2,OU=T2,{BASE}")
        assert event.modifications == (
            Modification(attribute="name", op=ModOp.REPLACE, values=("Ann2",)),
            Modification(attribute="CN", op=ModOp.REPLACE, values=("Ann2",)),
        )

    def test_unknown_previous_dn_makes_a_modify_carrying_the_new_dn(self) -> None:
        event = change(f"CN=Ann2,OU=T2,{BASE}", self.raw)
        assert (event.op, event.dn, event.old_dn) == (ChangeOp.MODIFY, f"CN=Ann2,OU=T2,{BASE}", None)
        assert Modification(attribute="CN", op=ModOp.REPLACE, values=("Ann2",)) in event.modifications

    def test_same_dn_spelt_differently_is_no_move(self) -> None:
        event = change(f"CN=Ann2,OU=T2,{BASE}", self.raw, previous_dn=f"cn=ann2,ou=t2,{BASE.lower()}")
        assert event.op is ChangeOp.MODIFY


class TestDelete:
    hostile = '#h2,+="\\<>;# x'

    def tombstone(self, name: str, parent: str) -> dict:
        return {
            "name": [f"{name}\nDEL:{GUID}".encode()],
            "isRecycled": [b"TRUE"],
            "lastKnownParent": [f"<GUID=2bf152c2-a436-4e12-8a25-768dfe89caf0>;{parent}".encode()],
            "isDeleted": [b"TRUE"],
            "displayName": None,
            "mail": None,
        }

    def test_tombstone_becomes_a_delete_of_the_dn_it_had(self) -> None:
        event = change(f"CN=Ann2\\0ADEL:{GUID},CN=Deleted Objects,{BASE}", self.tombstone("Ann2", f"OU=T2,{BASE}"))
        assert (event.op, event.dn, event.modifications, event.attributes) == (
            ChangeOp.DELETE, f"CN=Ann2,OU=T2,{BASE}", (), {},
        )

    def test_known_previous_dn_wins(self) -> None:
        event = change(
            f"CN=Ann2\\0ADEL:{GUID},CN=Deleted Objects,{BASE}",
            self.tombstone("Ann2", f"OU=T2,{BASE}"),
            previous_dn=f"CN=Ann2,OU=T2,{BASE}",
        )
        assert event.dn == f"CN=Ann2,OU=T2,{BASE}"

    def test_hostile_name_is_rebuilt_to_the_same_dn(self) -> None:
        event = change(f"CN=x\\0ADEL:{GUID},CN=Deleted Objects,{BASE}", self.tombstone(self.hostile, f"OU=T1,{BASE}"))
        # How Samba spells that user's DN.
        assert same_dn(event.dn, f'CN=\\#h2\\,\\+\\3D\\"\\\\\\<\\>\\3B\\# x,OU=T1,{BASE}')
        assert not same_dn(event.dn, f"CN=h2,OU=T1,{BASE}")

    def test_tombstone_without_parent_keeps_its_own_dn(self) -> None:
        dn = f"CN=Ann2\\0ADEL:{GUID},CN=Deleted Objects,{BASE}"
        assert change(dn, {"isDeleted": [b"TRUE"]}).dn == dn


@pytest.mark.parametrize("value", ["#a#b", " lead", "trail ", ',+="\\<>;#', "nul\x00", "é 中", "a=b"])
def test_escaped_rdn_values_mean_exactly_the_value(value: str) -> None:
    escaped = escape_rdn_value(value)
    assert len(parse_dn(f"CN={escaped},{BASE}")) == 4
    # Every byte hex-escaped is the other valid spelling of the same value.
    hex_spelt = "".join(f"\\{byte:02x}" for byte in value.encode())
    assert same_dn(f"CN={escaped},{BASE}", f"cn={hex_spelt},{BASE.lower()}")
    assert not same_dn(f"CN={escaped},{BASE}", f"CN={escape_rdn_value(value + 'x')},{BASE}")


class TestBadEntries:
    def test_entry_without_object_guid(self) -> None:
        with pytest.raises(EntryError, match="0 objectGUID"):
            parse_entry(f"CN=x,{BASE}", {"name": [b"x"]})

    def test_object_guid_of_the_wrong_size(self) -> None:
        with pytest.raises(EntryError, match="16 bytes"):
            parse_entry(f"CN=x,{BASE}", {"objectGUID": [b"short"]})


@pytest.mark.parametrize(
    ("name", "expected", "next_request"),
    [
        ("member;range=0-1499", ValueRange("member", 0, 1499), "member;range=1500-*"),
        ("Member;Range=1500-2999", ValueRange("Member", 1500, 2999), "Member;range=3000-*"),
        ("member;range=3000-*", ValueRange("member", 3000, None), None),
        ("member", None, None),
        ("member;binary", None, None),
    ],
)
def test_value_ranges_name_where_the_next_part_starts(
    name: str, expected: ValueRange | None, next_request: str | None
) -> None:
    assert value_range(name) == expected
    if next_request is not None:
        assert expected.next_request() == next_request
    elif expected is not None:
        with pytest.raises(ValueError, match="last part"):
            expected.next_request()
