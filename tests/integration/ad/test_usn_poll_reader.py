"""The uSNChanged poller against real Active Directory forests (Samba DCs).

Each test watches an OU of its own (the reader's base_dn), while the reader polls the whole
naming context; the directory helpers are the DirSync tests'.
"""

from __future__ import annotations

import asyncio
import gc
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import ldap3
import pytest

from connectors.ad import usn_poll as ad_usn_poll
from connectors.ad.usn_poll import UsnPollReader
from connectors.ad.values import same_dn
from streams.contracts import RetriableError
from streams.events import ChangeOp, DirectoryChange, ObjectKind
from streams.rules.metaverse import SourceObject, apply_change
from tests.integration.ad.conftest import Directory
from tests.integration.ad.test_dirsync_reader import changes_until, count, forest_of, only

pytestmark = pytest.mark.integration


def reader_for(directory: Directory, tmp_path: Path) -> UsnPollReader:
    return UsnPollReader(forest_of(directory.dc, "alpha", directory.ou, tmp_path, mode="ad-usn-poll"))


def highest_usn(directory: Directory) -> int:
    directory.connection.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=[ldap3.ALL_ATTRIBUTES])
    return int(directory.connection.response[0]["raw_attributes"]["highestCommittedUSN"][0])


def folded(changes: list[DirectoryChange]) -> SourceObject | None:
    """The object as the metaverse holds it after these changes."""
    state = None
    for change in changes:
        state = apply_change(state, change) or state
    return state


def members(change: DirectoryChange) -> set[str]:
    return {dn.lower() for dn in dict((k.lower(), v) for k, v in change.attributes.items()).get("member", ())}


async def test_snapshot_is_the_living_objects_in_scope_positioned_before_the_search(
    alpha: Directory, tmp_path: Path
) -> None:
    user = alpha.add_user("Snap User", displayName="Snap User", mail="snap@alpha.test")
    group = alpha.add_group("Snap Group")
    alpha.members(group, ldap3.MODIFY_ADD, user)
    alpha.add_user("Gone")
    alpha.delete(f"CN=Gone,OU=a,{alpha.ou}")
    before = highest_usn(alpha)
    reader = reader_for(alpha, tmp_path)
    try:
        batch = await reader.read(None)
    finally:
        await reader.close()
    by_dn = {change.dn.lower(): change for change in batch.changes}
    assert set(by_dn) == {dn.lower() for dn in (alpha.ou, f"OU=a,{alpha.ou}", f"OU=b,{alpha.ou}", user, group)}
    assert batch.is_snapshot and batch.rejected == () and {c.op for c in batch.changes} == {ChangeOp.ADD}
    assert int(batch.position) == before  # nothing was written meanwhile
    snap = by_dn[user.lower()]
    assert (snap.kind, snap.attributes["displayName"], snap.attributes["mail"]) == (
        ObjectKind.USER, ("Snap User",), ("snap@alpha.test",)
    )
    assert members(by_dn[group.lower()]) == {user.lower()}
    assert all(int(change.position) <= before for change in batch.changes)
    assert not {"usnchanged", "replpropertymetadata", "memberof"} & {name.lower() for name in snap.attributes}


async def test_lifecycle_each_change_is_the_latest_state_in_usn_order(alpha: Directory, tmp_path: Path) -> None:
    reader = reader_for(alpha, tmp_path)
    try:
        position = (await reader.read(None)).position

        async def step(write: Callable[[], object], n: int = 1) -> list[DirectoryChange]:
            nonlocal position
            write()
            changes, position = await changes_until(reader, position, count(n))
            return changes

        user, group = f"CN=Ann,OU=a,{alpha.ou}", f"CN=Staff,OU=a,{alpha.ou}"
        added = await step(lambda: (alpha.add_user("Ann", displayName="Ann A", mail="ann@alpha.test"),
                                    alpha.add_group("Staff")), n=2)
        assert [(c.op, c.dn, c.kind) for c in added] == [
            (ChangeOp.ADD, user, ObjectKind.USER), (ChangeOp.ADD, group, ObjectKind.GROUP)
        ]
        ann, staff = added

        modified = only(await step(lambda: alpha.replace(user, displayName="Ann B", telephoneNumber="123")))
        assert (modified.op, modified.object_id, modified.dn) == (ChangeOp.ADD, ann.object_id, user)
        assert (modified.attributes["displayName"], modified.attributes["mail"]) == (("Ann B",), ("ann@alpha.test",))

        # Cleared in the same poll interval as the rename: the MOVE must not leave it behind.
        renamed = only(await step(lambda: (
            alpha.connection.modify(user, {"telephoneNumber": [(ldap3.MODIFY_DELETE, [])]}),
            alpha.connection.modify_dn(user, "CN=Anna"),
        )))
        assert (renamed.op, renamed.old_dn, renamed.dn) == (ChangeOp.MOVE, user, f"CN=Anna,OU=a,{alpha.ou}")
        user = renamed.dn

        moved = only(await step(lambda: alpha.connection.modify_dn(user, "CN=Anna", new_superior=f"OU=b,{alpha.ou}")))
        assert (moved.op, moved.old_dn, moved.dn) == (ChangeOp.MOVE, user, f"CN=Anna,OU=b,{alpha.ou}")
        user = moved.dn

        # Membership travels as the group's whole member list, never as a delta.
        joined = only(await step(lambda: alpha.members(group, ldap3.MODIFY_ADD, user)))
        assert (joined.op, joined.object_id, members(joined)) == (ChangeOp.ADD, staff.object_id, {user.lower()})
        left = only(await step(lambda: alpha.members(group, ldap3.MODIFY_DELETE, user)))
        assert (left.op, members(left)) == (ChangeOp.ADD, set())

        history = [ann, modified, renamed, moved]
        state, actual = folded(history), alpha.read(user)
        assert same_dn(state.dn, actual["dn"])
        assert state.attributes["cn"] == ("Anna",) and state.attributes["displayname"] == ("Ann B",)
        assert "telephonenumber" not in state.attributes

        deleted = only(await step(lambda: alpha.delete(user)))
        assert (deleted.op, deleted.object_id, deleted.dn) == (ChangeOp.DELETE, ann.object_id, user)

        for changes in (history + [deleted], [staff, joined, left]):
            positions = [c.position for c in changes]
            assert positions == sorted(positions) and len(set(positions)) == len(positions)
    finally:
        await reader.close()


async def test_a_new_reader_resumes_from_a_returned_position(alpha: Directory, tmp_path: Path) -> None:
    outside = f"OU={alpha.ou.split(',')[0][3:]}-outside,{alpha.dc.base_dn}"
    alpha.connection.add(outside, ["top", "organizationalUnit"])
    alpha.connection.add(f"CN=Stranger,{outside}", ["top", "person", "organizationalPerson", "user"],
                         {"sAMAccountName": f"s{secrets.token_hex(8)}"})
    kept = alpha.add_user("Kept", displayName="Kept")
    doomed = alpha.add_user("Doomed")
    renamed = alpha.add_user("Renamed", displayName="Renamed", mail="renamed@alpha.test")
    leaving = alpha.add_user("Leaving")
    first = reader_for(alpha, tmp_path)
    try:
        snapshot = await first.read(None)
    finally:
        await first.close()
    ids = {c.dn: c.object_id for c in snapshot.changes}

    alpha.replace(kept, displayName="Kept Changed")
    alpha.delete(doomed)
    alpha.connection.modify_dn(renamed, "CN=Renamed Later", new_superior=f"OU=b,{alpha.ou}")
    alpha.connection.modify_dn(leaving, "CN=Leaving", new_superior=outside)
    alpha.replace(f"CN=Stranger,{outside}", displayName="Never in scope")
    fresh = alpha.add_user("Fresh", displayName="Fresh")

    second = reader_for(alpha, tmp_path)
    try:
        changes, _ = await changes_until(second, snapshot.position, count(5))
    finally:
        await second.close()
    by_id = {c.object_id: c for c in changes}
    assert len(changes) == len(by_id) == 5, changes  # the stranger, changed but never renamed, is not among them
    assert (by_id[ids[kept]].op, by_id[ids[kept]].attributes["displayName"]) == (ChangeOp.ADD, ("Kept Changed",))
    assert (by_id[ids[doomed]].op, by_id[ids[doomed]].dn) == (ChangeOp.DELETE, doomed)
    # The new reader never saw where these were: the one renamed inside comes whole, the one
    # moved out is deleted (by its new DN: the object id is what counts downstream).
    moved = by_id[ids[renamed]]
    assert (moved.op, moved.dn, moved.attributes["mail"]) == (
        ChangeOp.ADD, f"CN=Renamed Later,OU=b,{alpha.ou}", ("renamed@alpha.test",)
    )
    assert (by_id[ids[leaving]].op, by_id[ids[leaving]].dn) == (ChangeOp.DELETE, f"CN=Leaving,{outside}")
    added = next(c for c in changes if c.object_id not in ids.values())
    assert (added.op, added.dn, added.attributes["displayName"]) == (ChangeOp.ADD, fresh, ("Fresh",))


async def test_a_long_backlog_is_read_in_usn_windows_without_loss(
    alpha: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ad_usn_poll, "_USN_WINDOW", 3)
    user = alpha.add_user("Backlog")
    reader = reader_for(alpha, tmp_path)
    try:
        position = (await reader.read(None)).position
        for i in range(6):
            alpha.replace(user, displayName=f"Backlog {i}")
            alpha.add_user(f"Backlog Peer {i}")
        batches = []
        while len(batches) < 20:
            batch = await reader.read(position)
            if batch.position == position:
                break
            batches.append(batch)
            position = batch.position
    finally:
        await reader.close()
    changes = [change for batch in batches for change in batch.changes]
    assert len(batches) > 2 and all(len(batch.changes) <= 3 for batch in batches)
    assert [c.position for c in changes] == sorted(c.position for c in changes)
    assert {c.dn for c in changes} == {user, *(f"CN=Backlog Peer {i},OU=a,{alpha.ou}" for i in range(6))}
    assert folded([c for c in changes if c.dn == user]).attributes["displayname"] == ("Backlog 5",)
    assert int(position) == highest_usn(alpha)


async def test_a_read_from_another_position_drops_the_window_read_ahead(
    alpha: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ad_usn_poll, "_USN_WINDOW", 3)
    reader = reader_for(alpha, tmp_path)
    try:
        start = (await reader.read(None)).position
        peers = [alpha.add_user(f"Ahead Peer {i}") for i in range(6)]
        first = await reader.read(start)  # one window; the next one is searched ahead meanwhile
        # A retry (say the batch failed to publish): the same window again, not the one read ahead.
        again = await reader.read(start)
        assert [(c.object_id, c.position) for c in again.changes] == [(c.object_id, c.position) for c in first.changes]
        late = alpha.add_user("Ahead Late")  # above the highest USN the read ahead stops at
        changes, position = list(again.changes), again.position
        while True:
            batch = await reader.read(position)
            if batch.position == position:
                break
            changes += batch.changes
            position = batch.position
    finally:
        await reader.close()
    assert first.changes and [c.dn for c in changes] == [*peers, late]
    assert [c.position for c in changes] == sorted(c.position for c in changes)


async def test_dc_down_is_retriable_and_nothing_is_lost(alpha: Directory, tmp_path: Path) -> None:
    reader = reader_for(alpha, tmp_path)
    try:
        position = (await reader.read(None)).position
        before = alpha.add_user("Before Outage")
        doomed = alpha.add_user("Doomed Before Outage")
        alpha.delete(doomed)
        alpha.connection.unbind()
        alpha.dc.stop()
        try:
            for _ in range(2):  # the broken connection, then the refused reconnection
                with pytest.raises(RetriableError):
                    await reader.read(position)
        finally:
            alpha.dc.start()
        restarted = time.monotonic()
        while True:  # as the source runner does: retry while the forest reports itself unavailable
            try:
                batch = await reader.read(position)
                break
            except RetriableError:
                assert time.monotonic() - restarted < 30, "reader did not reconnect to the restarted DC"
                await asyncio.sleep(0.2)
        gc.collect()  # a socket left open would raise its ResourceWarning here, as an error
        print(f"\nusn poll reader reconnected {time.monotonic() - restarted:.1f}s after the DC was back")
        alpha.connection.bind()
        # The object added and deleted while unseen is one DELETE, by the DN its tombstone names.
        assert sorted((c.op, c.dn) for c in batch.changes) == [(ChangeOp.ADD, before), (ChangeOp.DELETE, doomed)]
        after = alpha.add_user("After Outage")
        changes, _ = await changes_until(reader, batch.position, count(1))
        assert (only(changes).op, only(changes).dn) == (ChangeOp.ADD, after)
    finally:
        await reader.close()
