"""The DirSync reader against real Active Directory forests (Samba DCs).

Each test watches an OU of its own (the reader's base_dn), so the objects of other tests are out
of its scope even though DirSync always reads the whole domain.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import random
import secrets
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import ldap3
import pytest

from connectors.ad.dirsync import DirSyncReader
from connectors.ad.values import escape_rdn_value, same_dn
from idsync.rig.samba import SambaDC
from idsync.rig.forests import reader_forest
from idsync.runtime import make_reader
from streams.config.forests import Forest
from streams.contracts import ChangeReader, RetriableError
from streams.events import ChangeOp, DirectoryChange, Modification, ModOp, ObjectKind
from streams.rules.metaverse import SourceObject, apply_change
from tests.integration.ad.conftest import AdForests, Directory

pytestmark = pytest.mark.integration

POLL_SECONDS = 0.1


def forest_of(dc: SambaDC, name: str, base_dn: str, secrets_dir: Path, mode: str = "ad-dirsync") -> Forest:
    return reader_forest(
        dc, base_dn, secrets_dir / f"{name}.password", name=name, mode=mode, poll_interval_seconds=POLL_SECONDS
    )


def reader_for(directory: Directory, tmp_path: Path, name: str = "alpha") -> DirSyncReader:
    return DirSyncReader(forest_of(directory.dc, name, directory.ou, tmp_path))


async def changes_until(
    reader: ChangeReader,
    position: str | None,
    done: Callable[[list[DirectoryChange]], bool],
    *,
    timeout: float = 10,
) -> tuple[list[DirectoryChange], str]:
    """Read batches until `done(changes so far)`; then one more read must bring nothing new."""
    seen: list[DirectoryChange] = []
    deadline = time.monotonic() + timeout
    while not done(seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"changes not seen within {timeout}s; got {seen}")
        batch = await reader.read(position)
        assert batch.rejected == () and not batch.is_snapshot
        seen += batch.changes
        position = batch.position
    quiet = await reader.read(position)
    assert quiet.changes == () and quiet.position == position, f"unexpected extra changes {quiet.changes}"
    assert not quiet.is_snapshot
    return seen, position


def count(n: int) -> Callable[[list[DirectoryChange]], bool]:
    return lambda seen: len(seen) >= n


def only(changes: Sequence[DirectoryChange]) -> DirectoryChange:
    assert len(changes) == 1, changes
    return changes[0]


async def test_snapshot_holds_every_object_in_scope_and_nothing_else(alpha: Directory, tmp_path: Path) -> None:
    user = alpha.add_user("Snap User", displayName="Snap User", mail="snap@alpha.test")
    group = alpha.add_group("Snap Group")
    computer = f"CN=PC1,OU=b,{alpha.ou}"
    alpha.connection.add(computer, ["top", "computer"], {"sAMAccountName": f"pc{secrets.token_hex(4)}$"})
    alpha.add_user("Gone")
    alpha.delete(f"CN=Gone,OU=a,{alpha.ou}")
    reader = reader_for(alpha, tmp_path)
    try:
        batch = await reader.read(None)
    finally:
        await reader.close()

    by_dn = {change.dn.lower(): change for change in batch.changes}
    assert {dn for dn in by_dn} == {
        dn.lower()
        for dn in (alpha.ou, f"OU=a,{alpha.ou}", f"OU=b,{alpha.ou}", user, group, computer)
    }
    assert batch.is_snapshot and {change.op for change in batch.changes} == {ChangeOp.ADD}
    snap = by_dn[user.lower()]
    assert (snap.op, snap.kind) == (ChangeOp.ADD, ObjectKind.USER)
    assert snap.attributes["CN"] == ("Snap User",)
    assert snap.attributes["displayName"] == ("Snap User",)
    assert snap.attributes["mail"] == ("snap@alpha.test",)
    assert by_dn[group.lower()].kind is ObjectKind.GROUP
    assert by_dn[computer.lower()].kind is ObjectKind.OTHER
    assert not any(name.lower() in ("unicodepwd", "ntsecuritydescriptor") for name in snap.attributes)
    assert batch.rejected == ()


async def test_lifecycle_of_a_user_and_a_group_each_change_seen_once_and_in_order(
    alpha: Directory, tmp_path: Path
) -> None:
    reader = reader_for(alpha, tmp_path)
    try:
        snapshot = await reader.read(None)
        position = snapshot.position

        async def step(write: Callable[[], object], n: int = 1) -> list[DirectoryChange]:
            nonlocal position
            write()
            changes, position = await changes_until(reader, position, count(n))
            return changes

        user = f"CN=Ann,OU=a,{alpha.ou}"
        group = f"CN=Staff,OU=a,{alpha.ou}"
        added = await step(lambda: (alpha.add_user("Ann", displayName="Ann A", mail="ann@alpha.test"),
                                    alpha.add_group("Staff")), n=2)
        ann = next(c for c in added if c.kind is ObjectKind.USER)
        staff = next(c for c in added if c.kind is ObjectKind.GROUP)
        assert (ann.op, ann.dn, ann.attributes["displayName"]) == (ChangeOp.ADD, user, ("Ann A",))
        assert (staff.op, staff.dn) == (ChangeOp.ADD, group)

        modified = only(await step(lambda: alpha.replace(user, displayName="Ann B")))
        assert (modified.op, modified.object_id, modified.dn) == (ChangeOp.MODIFY, ann.object_id, user)
        assert modified.modifications == (Modification(attribute="displayName", op=ModOp.REPLACE, values=("Ann B",)),)

        renamed = only(await step(lambda: alpha.connection.modify_dn(user, "CN=Anna")))
        assert (renamed.op, renamed.old_dn, renamed.dn) == (ChangeOp.MOVE, user, f"CN=Anna,OU=a,{alpha.ou}")
        assert Modification(attribute="CN", op=ModOp.REPLACE, values=("Anna",)) in renamed.modifications
        user = renamed.dn

        moved = only(await step(lambda: alpha.connection.modify_dn(user, "CN=Anna", new_superior=f"OU=b,{alpha.ou}")))
        assert (moved.op, moved.old_dn, moved.dn) == (ChangeOp.MOVE, user, f"CN=Anna,OU=b,{alpha.ou}")
        user = moved.dn

        joined = only(await step(lambda: alpha.members(group, ldap3.MODIFY_ADD, user)))
        assert (joined.op, joined.object_id) == (ChangeOp.MODIFY, staff.object_id)
        assert joined.modifications == (Modification(attribute="member", op=ModOp.ADD, values=(user,)),)

        left = only(await step(lambda: alpha.members(group, ldap3.MODIFY_DELETE, user)))
        assert left.modifications == (Modification(attribute="member", op=ModOp.DELETE, values=(user,)),)

        # Folded like the metaverse does, the events give the object as the directory has it.
        state: SourceObject | None = None
        for change in [ann, modified, renamed, moved]:
            state = apply_change(state, change) or state
        actual = alpha.read(user)
        assert same_dn(state.dn, actual["dn"])
        assert state.attributes["cn"] == tuple(v.decode() for v in actual["cn"]) == ("Anna",)
        assert state.attributes["displayname"] == ("Ann B",)

        deleted = only(await step(lambda: alpha.delete(user)))
        assert (deleted.op, deleted.object_id, deleted.dn) == (ChangeOp.DELETE, ann.object_id, user)

        # DirSync sends objectClass only with a new object; the reader names the kind every time.
        assert {c.kind for c in (ann, modified, renamed, moved, deleted)} == {ObjectKind.USER}
        assert {c.kind for c in (staff, joined, left)} == {ObjectKind.GROUP}
        for changes in ([ann, modified, renamed, moved, deleted], [staff, joined, left]):
            positions = [c.position for c in changes]
            assert positions == sorted(positions) and len(set(positions)) == len(positions)
    finally:
        await reader.close()


async def test_latency_and_order_of_a_stream_of_modifications(alpha: Directory, tmp_path: Path) -> None:
    """Writes at random moments against a reader polling on its own, as the source runner drives it."""
    user = alpha.add_user("Busy")
    writes = 25
    reader = reader_for(alpha, tmp_path)
    seen_at: dict[int, float] = {}
    seen_order: list[int] = []

    async def follow(position: str) -> None:
        while len(seen_order) < 1 or seen_order[-1] < writes - 1:
            batch = await reader.read(position)
            position = batch.position
            for change in batch.changes:
                (modification,) = change.modifications
                index = int(modification.values[0].split()[-1])
                seen_order.append(index)
                # DirSync reports state: a write not seen on its own is covered by a later one.
                for covered in range(index + 1):
                    seen_at.setdefault(covered, time.monotonic())

    try:
        follower = asyncio.create_task(follow((await reader.read(None)).position))
        written_at = []
        for i in range(writes):
            await asyncio.sleep(random.uniform(0.02, 0.2))
            written_at.append(time.monotonic())
            alpha.replace(user, displayName=f"Busy {i}")
        await asyncio.wait_for(follower, timeout=10)
    finally:
        await reader.close()
    assert seen_order == sorted(set(seen_order)) and seen_order[-1] == writes - 1
    latencies = sorted(seen_at[i] - written_at[i] for i in range(writes))
    p50, p95 = statistics.median(latencies), latencies[int(len(latencies) * 0.95) - 1]
    print(f"\ndirsync latency write->seen at {POLL_SECONDS * 1000:.0f} ms poll: p50={p50 * 1000:.0f} ms "
          f"p95={p95 * 1000:.0f} ms max={latencies[-1] * 1000:.0f} ms writes={writes} "
          f"seen_separately={len(seen_order)}")
    assert p50 < 5 * POLL_SECONDS


@pytest.mark.parametrize("mode", ["ad-dirsync", "ad-usn-poll"])
async def test_moves_across_base_dn_are_deletes_and_adds(alpha: Directory, tmp_path: Path, mode: str) -> None:
    outside = f"OU={alpha.ou.split(',')[0][3:]}-outside,{alpha.dc.base_dn}"
    alpha.connection.add(outside, ["top", "organizationalUnit"])
    user = alpha.add_user("Mover", displayName="Mover", mail="mover@alpha.test")
    reader = make_reader(forest_of(alpha.dc, "alpha", alpha.ou, tmp_path, mode=mode))
    try:
        position = (await reader.read(None)).position
        alpha.connection.modify_dn(user, "CN=Mover", new_superior=outside)
        left, position = await changes_until(reader, position, count(1))
        assert (only(left).op, only(left).dn) == (ChangeOp.DELETE, user)

        alpha.replace(f"CN=Mover,{outside}", displayName="Changed Outside")
        alpha.connection.modify_dn(f"CN=Mover,{outside}", "CN=Mover", new_superior=f"OU=b,{alpha.ou}")
        back, position = await changes_until(reader, position, count(1))
        returned = only(back)
        assert (returned.op, returned.object_id, returned.kind) == (ChangeOp.ADD, left[0].object_id, ObjectKind.USER)
        assert returned.dn == f"CN=Mover,OU=b,{alpha.ou}"
        assert returned.attributes["displayName"] == ("Changed Outside",)
        assert returned.attributes["mail"] == ("mover@alpha.test",)
    finally:
        await reader.close()


async def test_resume_from_cookie_sees_exactly_the_changes_made_meanwhile(alpha: Directory, tmp_path: Path) -> None:
    kept = alpha.add_user("Kept", displayName="Kept")
    doomed = alpha.add_user("Doomed")
    renamed = alpha.add_user("Renamed", displayName="Renamed", mail="renamed@alpha.test")
    first = reader_for(alpha, tmp_path)
    try:
        snapshot = await first.read(None)
    finally:
        await first.close()
    ids = {c.dn: c.object_id for c in snapshot.changes}

    alpha.replace(kept, displayName="Kept Changed")
    alpha.delete(doomed)
    alpha.connection.modify_dn(renamed, "CN=Renamed Later", new_superior=f"OU=b,{alpha.ou}")
    fresh = alpha.add_user("Fresh", displayName="Fresh")

    second = reader_for(alpha, tmp_path)
    try:
        changes, _ = await changes_until(second, snapshot.position, count(4))
    finally:
        await second.close()
    by_id = {c.object_id: c for c in changes}
    assert len(changes) == len(by_id) == 4
    assert by_id[ids[kept]].op is ChangeOp.MODIFY
    assert by_id[ids[kept]].modifications == (
        Modification(attribute="displayName", op=ModOp.REPLACE, values=("Kept Changed",)),
    )
    assert (by_id[ids[doomed]].op, by_id[ids[doomed]].dn) == (ChangeOp.DELETE, doomed)
    # The new reader never saw where it was: the renamed object comes whole.
    moved = by_id[ids[renamed]]
    assert (moved.op, moved.dn) == (ChangeOp.ADD, f"CN=Renamed Later,OU=b,{alpha.ou}")
    assert moved.attributes["mail"] == ("renamed@alpha.test",)
    added = next(c for c in changes if c.object_id not in ids.values())
    assert (added.op, added.dn, added.attributes["displayName"]) == (ChangeOp.ADD, fresh, ("Fresh",))


async def test_two_forests_at_once(ad_forests: AdForests, unique_name: str, tmp_path: Path) -> None:
    with ad_forests.alpha.admin_connection(raise_exceptions=True) as a, \
            ad_forests.beta.admin_connection(raise_exceptions=True) as b:
        directories = [Directory(ad_forests.alpha, a, unique_name), Directory(ad_forests.beta, b, unique_name)]
        readers = [reader_for(d, tmp_path, name) for d, name in zip(directories, ("alpha", "beta"))]
        try:
            positions = [batch.position for batch in await asyncio.gather(*(r.read(None) for r in readers))]
            for directory, name in zip(directories, ("alpha", "beta")):
                directory.add_user(f"User {name}", displayName=f"In {name}")
            results = await asyncio.gather(
                *(changes_until(r, p, count(1)) for r, p in zip(readers, positions))
            )
        finally:
            for reader in readers:
                await reader.close()
    (alpha_changes, _), (beta_changes, _) = results
    assert (only(alpha_changes).forest, only(alpha_changes).attributes["displayName"]) == ("alpha", ("In alpha",))
    assert (only(beta_changes).forest, only(beta_changes).attributes["displayName"]) == ("beta", ("In beta",))
    assert only(alpha_changes).dn.endswith(ad_forests.alpha.base_dn)
    assert only(beta_changes).dn.endswith(ad_forests.beta.base_dn)


async def test_dc_down_is_retriable_and_nothing_is_lost(alpha: Directory, tmp_path: Path) -> None:
    reader = reader_for(alpha, tmp_path)
    try:
        position = (await reader.read(None)).position
        before = alpha.add_user("Before Outage")
        alpha.connection.unbind()
        alpha.dc.stop()
        try:
            for _ in range(2):  # the broken connection, then the refused reconnection
                with pytest.raises(RetriableError):
                    await reader.read(position)
        finally:
            alpha.dc.start()
        restarted = time.monotonic()
        # As the source runner does: retry while the forest reports itself unavailable.
        while True:
            try:
                batch = await reader.read(position)
                break
            except RetriableError:
                assert time.monotonic() - restarted < 30, "reader did not reconnect to the restarted DC"
                await asyncio.sleep(0.2)
        gc.collect()  # a socket left open would raise its ResourceWarning here, as an error
        print(f"\ndirsync reader reconnected {time.monotonic() - restarted:.1f}s after the DC was back")
        alpha.connection.bind()
        assert [(c.op, c.dn) for c in batch.changes] == [(ChangeOp.ADD, before)]
        after = alpha.add_user("After Outage")
        changes, _ = await changes_until(reader, batch.position, count(1))
        assert (only(changes).op, only(changes).dn) == (ChangeOp.ADD, after)
    finally:
        await reader.close()


async def test_hostile_names_and_binary_values_are_decoded_exactly(alpha: Directory, tmp_path: Path) -> None:
    hostile = '#Hostile ,+="\\<>;# é'
    photo = bytes(range(256))
    reader = reader_for(alpha, tmp_path)
    try:
        position = (await reader.read(None)).position
        dn = alpha.add_user(hostile, displayName=hostile, thumbnailPhoto=photo)
        added, position = await changes_until(reader, position, count(1))
        add = only(added)
        assert add.op is ChangeOp.ADD
        assert same_dn(add.dn, dn)
        assert add.attributes["CN"] == (hostile,)
        assert add.attributes["displayName"] == (hostile,)
        assert base64.b64decode(add.attributes["thumbnailPhoto;base64"][0]) == photo

        alpha.connection.modify_dn(add.dn, f"CN={escape_rdn_value(hostile + ' 2')}")
        renamed, position = await changes_until(reader, position, count(1))
        move = only(renamed)
        assert (move.op, move.old_dn) == (ChangeOp.MOVE, add.dn)
        assert Modification(attribute="CN", op=ModOp.REPLACE, values=(hostile + " 2",)) in move.modifications

        alpha.delete(move.dn)
        deleted, position = await changes_until(reader, position, count(1))
        assert (only(deleted).op, only(deleted).dn) == (ChangeOp.DELETE, move.dn)
    finally:
        await reader.close()
