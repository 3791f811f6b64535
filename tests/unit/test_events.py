import orjson
import pytest

from streams.events import (
    ChangeOp,
    ContactState,
    DirectoryChange,
    EventDecodeError,
    Modification,
    ModOp,
    ObjectKind,
    ReaderPosition,
)


def test_directory_change_round_trip():
    change = DirectoryChange(
        forest="forest-a",
        object_id="8a1f",
        op=ChangeOp.MOVE,
        kind=ObjectKind.USER,
        dn="cn=b,dc=a",
        old_dn="cn=a,dc=a",
        modifications=(Modification(attribute="cn", op=ModOp.ADD, values=("b",)),),
        position="20261122050000.000001Z",
        changed_at="2026-11-22T05:00:00Z",
    )
    assert DirectoryChange.from_bytes(change.to_bytes()) == change
    assert change.key == "forest-a/8a1f"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"not json", "not JSON"),
        (b"[]", "expected a JSON object"),
        (orjson.dumps({"schema": "other", "version": 1}), "expected schema"),
        (orjson.dumps({"schema": "idsync.directory-change", "version": 99}), "unsupported version 99"),
        (orjson.dumps({"schema": "idsync.directory-change", "version": 1, "forest": "a"}), "KeyError"),
        (
            orjson.dumps(
                {
                    "schema": "idsync.directory-change",
                    "version": 1,
                    "forest": "a",
                    "object_id": "x",
                    "op": "explode",
                    "kind": None,
                    "dn": "cn=x",
                    "position": "1",
                    "changed_at": "t",
                }
            ),
            "explode",
        ),
    ],
)
def test_directory_change_rejects_bad_input_with_reason(raw, reason):
    with pytest.raises(EventDecodeError, match=reason):
        DirectoryChange.from_bytes(raw)


def test_contact_state_round_trip_and_checks():
    state = ContactState(
        anchor="forest-a/8a1f",
        present=True,
        container_dn="ou=a,dc=c",
        dn="cn=x,ou=a,dc=c",
        object_classes=("top", "contact"),
        attributes={"mail": ("x@y",)},
        managed_attributes=("mail", "displayName"),
    )
    assert ContactState.from_bytes(state.to_bytes()) == state
    broken = orjson.loads(state.to_bytes()) | {"dn": None}
    with pytest.raises(EventDecodeError, match="needs a dn"):
        ContactState.from_bytes(orjson.dumps(broken))
    with pytest.raises(EventDecodeError, match="record has no value"):
        ContactState.from_bytes(None)


def test_reader_position_round_trip():
    position = ReaderPosition(reader="forest/a", mode="accesslog-poll", position="20261122050000.000001Z")
    assert ReaderPosition.from_bytes(position.to_bytes()) == position


def test_changes_topic_carries_changes_and_snapshot_markers():
    from streams.events import SnapshotMarker, SnapshotPhase, decode_change_topic

    marker = SnapshotMarker(forest="f", snapshot_id="s", phase=SnapshotPhase.END, high_water=None, objects=0)
    assert decode_change_topic(marker.to_bytes()) == marker
    change = DirectoryChange(
        forest="f", object_id="o", op=ChangeOp.DELETE, dn="cn=o", position="p", changed_at="t", snapshot_id="s"
    )
    assert decode_change_topic(change.to_bytes()) == change
    with pytest.raises(EventDecodeError, match="phase"):
        decode_change_topic(orjson.dumps({"schema": "idsync.snapshot-marker", "version": 1, "forest": "f", "snapshot_id": "s"}))
