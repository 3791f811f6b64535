"""The pure rules of the uSNChanged poller: USNs of an entry, whole-state events, and the scope
memory it shares with the DirSync reader."""

from __future__ import annotations

import struct
import uuid

import pytest

from connectors.ad.scope import ScopeMemory
from connectors.ad.values import (
    DirSyncEntry,
    EntryError,
    entry_usn,
    latest_state,
    parse_entry,
    rdn_usn,
    to_change,
    usn_position,
)
from streams.events import ChangeOp, DirectoryChange, Modification, ModOp
from streams.rules.metaverse import apply_change
from tests.unit.test_ad_values import BASE, GUID, GUID_RAW, new_user_raw

OU = f"OU=T1,{BASE}"
NAME_ATTRTYP = 0x90001


def metadata(*entries: tuple[int, int], version: int = 1) -> bytes:
    """A replPropertyMetaDataBlob: (attribute id, local USN) pairs, other fields arbitrary."""
    blob = struct.pack("<IIII", version, 0, len(entries), 0)
    for attribute, local_usn in entries:
        blob += struct.pack("<IIQ16sqq", attribute, 3, 13_400_000_000, uuid.uuid4().bytes, local_usn + 7, local_usn)
    return blob


def whole(dn: str = f"CN=Ann,{OU}", name: bytes = b"Ann", **extra: list[bytes]) -> DirSyncEntry:
    """An entry as a plain search returns it: every attribute, uSNChanged and metadata included."""
    raw = {"objectGUID": [GUID_RAW], "cn": [name], "uSNChanged": [b"4100"], **new_user_raw(name), **extra}
    return parse_entry(dn, raw)


def tombstone(parent: str = OU) -> DirSyncEntry:
    return parse_entry(
        f"CN=Ann\\0ADEL:{GUID},CN=Deleted Objects,{BASE}",
        {
            "objectGUID": [GUID_RAW],
            "isDeleted": [b"TRUE"],
            "name": [f"Ann\nDEL:{GUID}".encode()],
            "lastKnownParent": [parent.encode()],
            "whenCreated": [b"20261122053130.0Z"],
            "uSNChanged": [b"4200"],
        },
    )


def at(position: int = 4100) -> dict[str, str]:
    return {"position": usn_position(position), "changed_at": "2026-11-22T06:00:00Z"}


class TestUsns:
    def test_usn_changed_of_an_entry(self) -> None:
        assert entry_usn(whole()) == 4100

    @pytest.mark.parametrize("values", [[], [b"41x"], [b"1", b"2"]])
    def test_refuses_an_entry_without_one_numeric_usn(self, values: list[bytes]) -> None:
        with pytest.raises(EntryError, match="uSNChanged"):
            entry_usn(whole(uSNChanged=values))

    def test_rename_usn_is_the_local_usn_of_name(self) -> None:
        blob = metadata((0x0, 4001), (NAME_ATTRTYP, 4090), (0x90092, 4100))
        assert rdn_usn(whole(replPropertyMetaData=[blob])) == 4090

    @pytest.mark.parametrize(
        "blobs",
        [[], [b"\x01\x00"], [metadata((NAME_ATTRTYP, 1), version=2)], [metadata((0x0, 5))],
         [metadata((NAME_ATTRTYP, 9))[:-8]]],
        ids=["absent", "short", "other-version", "no-name", "truncated"],
    )
    def test_unknown_when_the_metadata_does_not_say(self, blobs: list[bytes]) -> None:
        assert rdn_usn(whole(replPropertyMetaData=blobs)) is None


class TestLatestState:
    def test_a_whole_entry_is_an_add_of_everything_a_snapshot_would_hold(self) -> None:
        entry = whole(replPropertyMetaData=[metadata((NAME_ATTRTYP, 4000))])
        event = latest_state("alpha", entry, **at())
        assert event == to_change("alpha", entry, **at())
        assert event.op is ChangeOp.ADD and event.attributes["mail"] == ("ann@corp.test",)
        assert not {"usnchanged", "replpropertymetadata"} & {name.lower() for name in event.attributes}

    def test_same_dn_spelt_differently_stays_an_add(self) -> None:
        event = latest_state("alpha", whole(), previous_dn=f"cn=ann,ou=t1,{BASE.lower()}", **at())
        assert event.op is ChangeOp.ADD

    def test_a_rename_is_a_move_that_lands_exactly_on_the_latest_state(self) -> None:
        before = latest_state("alpha", whole(telephoneNumber=[b"123"]), **at(4000))
        published = {name.lower() for name in before.attributes} | {"description"}
        # Renamed, and in the same poll interval its phone number cleared and its mail changed.
        after = whole(f"CN=Anna,OU=T2,{BASE}", b"Anna", mail=[b"anna@corp.test"])
        move = latest_state("alpha", after, previous_dn=before.dn, published=published, **at(4100))
        assert (move.op, move.old_dn, move.dn, move.attributes) == (ChangeOp.MOVE, before.dn, after.dn, {})
        assert Modification(attribute="telephonenumber", op=ModOp.DELETE) in move.modifications
        assert Modification(attribute="cn", op=ModOp.REPLACE, values=("Anna",)) in move.modifications

        folded = apply_change(apply_change(None, before), move)
        assert folded is not None and folded.dn == after.dn
        assert folded.attributes == apply_change(None, to_change("alpha", after, **at(4100))).attributes


class TestScope:
    """The decisions the DirSync reader and the poller share, driven as the poller drives them."""

    @staticmethod
    def read(memory: ScopeMemory, position: str | None, *entries: tuple[DirSyncEntry, bool]) -> list[DirectoryChange]:
        batch = memory.begin(position)
        changes = [
            batch.change(
                entry,
                renamed=renamed,
                publish=lambda e, previous: latest_state("alpha", e, previous_dn=previous, **at()),
                whole=lambda entry=entry: entry,
                **at(),
            )
            for entry, renamed in entries
        ]
        memory.returned(usn_position(4100), batch)
        return [change for change in changes if change is not None]

    def test_first_sight_then_rename_then_move_out_then_back_in(self) -> None:
        memory = ScopeMemory("alpha", OU)
        position = usn_position(4100)
        (add,) = self.read(memory, None, (whole(), False))
        assert add.op is ChangeOp.ADD
        (move,) = self.read(memory, position, (whole(f"CN=Anna,{OU}", b"Anna"), True))
        assert (move.op, move.old_dn) == (ChangeOp.MOVE, f"CN=Ann,{OU}")
        (left,) = self.read(memory, position, (whole(f"CN=Anna,OU=Elsewhere,{BASE}", b"Anna"), True))
        assert (left.op, left.dn) == (ChangeOp.DELETE, f"CN=Anna,{OU}")
        (back,) = self.read(memory, position, (whole(f"CN=Anna,{OU}", b"Anna"), True))
        assert (back.op, back.dn) == (ChangeOp.ADD, f"CN=Anna,{OU}")

    def test_after_a_snapshot_an_unknown_object_outside_was_never_in_scope(self) -> None:
        memory = ScopeMemory("alpha", OU)
        self.read(memory, None)
        assert self.read(memory, usn_position(4100), (whole(f"CN=Ann,OU=Elsewhere,{BASE}"), True)) == []

    def test_after_a_restart_only_a_renamed_object_outside_is_deleted(self) -> None:
        memory = ScopeMemory("alpha", OU)
        outside = whole(f"CN=Ann,OU=Elsewhere,{BASE}")
        assert self.read(memory, usn_position(4000), (outside, False)) == []
        (gone,) = self.read(memory, usn_position(4000), (outside, True))
        assert (gone.op, gone.dn) == (ChangeOp.DELETE, outside.dn)

    def test_a_tombstone_is_a_delete_of_its_last_known_dn_inside_only(self) -> None:
        memory = ScopeMemory("alpha", OU)
        (deleted,) = self.read(memory, usn_position(4000), (tombstone(), False))
        assert (deleted.op, deleted.dn) == (ChangeOp.DELETE, f"CN=Ann,{OU}")
        assert self.read(memory, usn_position(4000), (tombstone(f"OU=Elsewhere,{BASE}"), False)) == []

    def test_memory_of_a_batch_not_continued_is_dropped(self) -> None:
        memory = ScopeMemory("alpha", OU)
        self.read(memory, None, (whole(), False))
        # A retry from an older position (the batch was not published): the rename is not a MOVE.
        (renamed,) = self.read(memory, usn_position(4000), (whole(f"CN=Anna,{OU}", b"Anna"), True))
        assert renamed.op is ChangeOp.ADD
