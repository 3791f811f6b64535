from datetime import datetime, timezone

import pytest

from connectors.ldap.values import RecordError, position_at, position_minus
from connectors.openldap.accesslog import (
    csn_lower_bound,
    decode_record,
    iso_time,
    parse_modifications,
    record_csn,
    snapshot_position,
)
from streams.events import ChangeOp, Modification, ModOp, ObjectKind

CSN = "20261122050422.517563Z#000000#000#000000"


def record(**attrs):
    attrs = {"entryCSN": [CSN]} | attrs
    return {name: [v.encode() if isinstance(v, str) else v for v in values] for name, values in attrs.items()}


def test_add_becomes_full_entry_without_operational_attributes():
    change = decode_record(
        "forest-a",
        record(
            entryCSN=["20261122050423.000140Z#000000#000#000000"],
            reqStart=["20261122050422.999990Z"],
            reqType=["add"],
            reqDN=["uid=alice,ou=people,dc=x"],
            reqMod=[
                "objectClass:+ inetOrgPerson",
                "cn:+ Alice A",
                "mail:+ alice@x.test",
                "entryUUID:+ ece5c9ac-7a7d",
                "entryCSN:+ 20261122050422.517563Z#000000#000#000000",
            ],
            reqEntryUUID=["ece5c9ac-7a7d"],
        ),
    )
    assert change.op is ChangeOp.ADD and change.kind is ObjectKind.USER
    assert change.object_id == "ece5c9ac-7a7d"
    assert dict(change.attributes) == {
        "objectClass": ("inetOrgPerson",),
        "cn": ("Alice A",),
        "mail": ("alice@x.test",),
    }
    # Positioned where the write committed, dated when it arrived.
    assert change.position == "20261122050423.000140Z#000000#000#000000"
    assert change.changed_at == "2026-11-22T05:04:22Z"


def test_modify_groups_values_and_keeps_whole_attribute_deletes():
    mods = parse_modifications(
        [b"displayName:= Alice Q", b"member:+ cn=a", b"member:+ cn=b", b"mail:-", b"description:- d1", b"modifyTimestamp:= x"]
    )
    assert mods == (
        Modification(attribute="displayName", op=ModOp.REPLACE, values=("Alice Q",)),
        Modification(attribute="member", op=ModOp.ADD, values=("cn=a", "cn=b")),
        Modification(attribute="mail", op=ModOp.DELETE),
        Modification(attribute="description", op=ModOp.DELETE, values=("d1",)),
    )


def test_replace_with_no_value_clears_the_attribute():
    assert parse_modifications([b"description:="]) == (
        Modification(attribute="description", op=ModOp.REPLACE),
    )


def test_modrdn_becomes_move_with_rdn_value_changes():
    change = decode_record(
        "forest-a",
        record(
            reqStart=["20261122050422.000012Z"],
            reqType=["modrdn"],
            reqDN=["uid=alice,ou=people,dc=x"],
            reqNewRDN=["uid=alice2"],
            reqDeleteOldRDN=["TRUE"],
            reqNewSuperior=["ou=staff,dc=x"],
            reqEntryUUID=["u1"],
        ),
    )
    assert change.op is ChangeOp.MOVE
    assert change.old_dn == "uid=alice,ou=people,dc=x"
    assert change.dn == "uid=alice2,ou=staff,dc=x"
    assert change.modifications == (
        Modification(attribute="uid", op=ModOp.ADD, values=("alice2",)),
        Modification(attribute="uid", op=ModOp.DELETE, values=("alice",)),
    )


def test_escaped_rdn_values_are_unescaped():
    change = decode_record(
        "f",
        record(
            reqStart=["20261122050422.000012Z"],
            reqType=["modrdn"],
            reqDN=["cn=A\\2C B,dc=x"],
            reqNewRDN=["cn=Caf\\C3\\A9\\, \\\"x\\\""],
            reqDeleteOldRDN=["FALSE"],
            reqEntryUUID=["u1"],
        ),
    )
    assert change.dn == 'cn=Caf\\C3\\A9\\, \\"x\\",dc=x'
    assert change.modifications == (Modification(attribute="cn", op=ModOp.ADD, values=('Café, "x"',)),)


def test_delete_carries_dn_and_uuid():
    change = decode_record(
        "f",
        record(reqStart=["20261122050422.000014Z"], reqType=["delete"], reqDN=["uid=a,dc=x"], reqEntryUUID=["u1"]),
    )
    assert change.op is ChangeOp.DELETE and change.object_id == "u1" and change.dn == "uid=a,dc=x"


@pytest.mark.parametrize(
    "attrs, reason",
    [
        ({"reqType": ["add"], "reqDN": ["cn=a"], "reqMod": ["cn:+ a"], "reqEntryUUID": ["u"]}, "no reqstart"),
        (
            {
                "entryCSN": [],
                "reqStart": ["20261122050422.000001Z"],
                "reqType": ["delete"],
                "reqDN": ["cn=a"],
                "reqEntryUUID": ["u"],
            },
            "no entrycsn",
        ),
        (
            {"reqStart": ["20261122050422.000001Z"], "reqType": ["add"], "reqDN": ["cn=a"], "reqMod": ["cn:+ a"]},
            "no entryUUID",
        ),
        (
            {"reqStart": ["20261122050422.000001Z"], "reqType": ["modify"], "reqDN": ["cn=a"], "reqMod": ["cn:= a"]},
            "no reqEntryUUID",
        ),
        (
            {
                "reqStart": ["20261122050422.000001Z"],
                "reqType": ["modify"],
                "reqDN": [b"cn=\xff"],
                "reqEntryUUID": ["u"],
                "reqMod": ["cn:= a"],
            },
            "not UTF-8",
        ),
        (
            {
                "reqStart": ["20261122050422.000001Z"],
                "reqType": ["modify"],
                "reqDN": ["cn=a"],
                "reqEntryUUID": ["u"],
                "reqMod": ["garbage"],
            },
            "malformed reqMod",
        ),
    ],
)
def test_bad_records_raise_with_reason(attrs, reason):
    with pytest.raises(RecordError, match=reason):
        decode_record("f", record(**attrs))


def test_operations_idsync_ignores():
    assert decode_record(
        "f", record(reqStart=["20261122050422.000001Z"], reqType=["extended"], reqDN=["cn=a"], reqEntryUUID=["u"])
    ) is None


def test_position_arithmetic_is_ordered_text():
    assert position_minus("20261122050422.000012Z", 2) == "20261122050420.000000Z"
    assert position_minus("20260101000000.000001Z", 1.5) < "20260101000000.000001Z"
    assert iso_time("20261122050422.000012Z") == "2026-11-22T05:04:22Z"


def test_a_csn_position_is_its_own_lower_bound():
    assert csn_lower_bound(CSN, 2) == CSN


def test_a_position_from_before_csns_is_read_again_from_the_overlap_window_before_it():
    # A reqStart stored by an older idsync: that reader still owed the window's late commits.
    bound = csn_lower_bound("20261122050422.000012Z", 2)
    assert bound == "20261122050420.000000Z#000000#000#000000"
    late_commit = "20261122050421.300000Z#000000#000#000000"  # arrived before the position
    assert bound <= late_commit
    # A snapshot's time as an older idsync stored it: the same rule.
    assert csn_lower_bound("20261122050422.000000Z", 2) == bound


def test_record_csn_names_the_record_whatever_the_attribute_spelling():
    assert record_csn({"entrycsn": [CSN.encode()]}) == CSN
    assert record_csn({"reqStart": [b"20261122050422.000001Z"]}) is None


def test_a_snapshot_position_is_a_time_older_than_the_csns_of_writes_after_it():
    position = snapshot_position(2)
    assert position.endswith(".000000Z") and "#" not in position
    assert position < position_minus(position_at(datetime.now(timezone.utc)), 1) + "#000000#000#000000"


def test_within_compares_dns_by_components():
    from connectors.ldap.values import within

    assert within("uid=a,OU=People,dc=x", "ou=people,dc=x")
    assert within("ou=people,dc=x", "ou=people,dc=x")
    assert within("cn=A\\2Cb,dc=x", "dc=x")
    assert not within("uid=a,ou=other,dc=x", "ou=people,dc=x")
    assert not within("uid=a,ou=xpeople,dc=x", "ou=people,dc=x")
    # An escaped comma is part of the RDN value, an escaped backslash before a comma is not.
    assert not within("uid=a\\,ou=people,dc=x", "ou=people,dc=x")
    assert within("uid=a\\\\,ou=people,dc=x", "ou=people,dc=x")
    assert not within(None, "dc=x")
    assert not within("not a dn", "dc=x")


def test_binary_values_travel_base64_encoded_under_a_marked_name():
    (mod,) = parse_modifications([b"jpegPhoto:= \xff\xd8\xff\x00"])
    assert mod == Modification(attribute="jpegPhoto;base64", op=ModOp.REPLACE, values=("/9j/AA==",))


def test_csn_after_moves_the_time_to_the_microsecond_and_carries_over():
    from connectors.openldap.accesslog import csn_after

    assert csn_after("20261122053453.189566Z#000003#000#000000", 1.5) == "20261122053454.689566Z#000000#000#000000"
    assert csn_after("20261231235959.999999Z#000000#000#000000", 0.000001) == "20270101000000.000000Z#000000#000#000000"


def test_the_poll_span_halves_when_crowded_doubles_when_sparse_and_stays_bounded():
    from connectors.openldap.accesslog_poll import _SPAN_LIMITS, _SPAN_RECORDS, _next_span

    assert _next_span(8.0, _SPAN_RECORDS + 1) == 4.0
    assert _next_span(8.0, _SPAN_RECORDS // 2) == 8.0
    assert _next_span(8.0, 1) == 16.0
    assert _next_span(_SPAN_LIMITS[0], 10 * _SPAN_RECORDS) == _SPAN_LIMITS[0]
    assert _next_span(_SPAN_LIMITS[1], 0) == _SPAN_LIMITS[1]
