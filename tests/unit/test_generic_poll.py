from datetime import datetime, timezone

from connectors.ldap.generic_poll import (
    ENTRY_CSN,
    MODIFY_TIMESTAMP,
    PollPosition,
    change_position,
    entry_version,
    normalized_stamp,
    since_filter,
)

CSN = "20261122060534.712894Z#000000#000#000000"
SEEN_AT = datetime(2026, 11, 22, 6, 5, 36, 123456, tzinfo=timezone.utc)


def test_stamps_normalize_to_the_form_positions_compare_in():
    assert normalized_stamp(ENTRY_CSN, CSN) == CSN
    assert normalized_stamp(MODIFY_TIMESTAMP, "20261122060534Z") == "20261122060534.000000Z"
    # A snapshot's position (a whole second) sorts before every write within that second.
    assert "20261122060534.000000Z" < CSN


def test_since_filter_uses_a_whole_csn_that_slapd_accepts():
    assert since_filter(ENTRY_CSN, "20261122060532.000000Z") == "(entryCSN>=20261122060532.000000Z#000000#000#000000)"
    assert since_filter(ENTRY_CSN, CSN) == "(entryCSN>=20261122060534.712894Z#000000#000#000000)"
    assert since_filter(MODIFY_TIMESTAMP, "20261122060532.000000Z") == "(modifyTimestamp>=20261122060532Z)"


def test_a_csn_is_the_version_and_the_position_of_a_change():
    assert entry_version(ENTRY_CSN, CSN, {"cn": [b"a"]}) == CSN
    assert change_position(ENTRY_CSN, CSN, SEEN_AT) == CSN


def test_a_modify_timestamp_version_tells_two_writes_within_one_second_apart():
    stamp = "20261122060534.000000Z"
    first = entry_version(MODIFY_TIMESTAMP, stamp, {"cn": [b"a"], "sn": [b"x"]})
    assert first == entry_version(MODIFY_TIMESTAMP, stamp, {"sn": [b"x"], "cn": [b"a"]})
    assert first != entry_version(MODIFY_TIMESTAMP, stamp, {"cn": [b"a"], "sn": [b"y"]})
    # Versions start with the stamp: the overlap window is pruned by comparing them with it.
    assert first.startswith(stamp)


def test_a_modify_timestamp_position_orders_same_second_twins_by_when_they_were_seen():
    stamp = "20261122060534.000000Z"
    earlier = change_position(MODIFY_TIMESTAMP, stamp, SEEN_AT)
    later = change_position(MODIFY_TIMESTAMP, stamp, SEEN_AT.replace(microsecond=123457))
    assert earlier == "20261122060534.000000Z#20261122060536.123456Z"
    assert stamp < earlier < later < "20261122060535.000000Z"


def test_position_round_trips_and_schedules_the_reconcile():
    position = PollPosition(CSN, "20261122060000.000000Z")
    assert PollPosition.parse(str(position)) == position
    assert not position.reconcile_due(datetime(2026, 11, 22, 6, 4, 59, tzinfo=timezone.utc), 300)
    assert position.reconcile_due(datetime(2026, 11, 22, 6, 5, 0, tzinfo=timezone.utc), 300)


def test_a_position_without_a_reconcile_time_reconciles_now():
    position = PollPosition.parse(CSN)
    assert position == PollPosition(CSN, None)
    assert position.reconcile_due(datetime(2000, 1, 1, tzinfo=timezone.utc), 300)
