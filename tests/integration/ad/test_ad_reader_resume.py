"""Both AD readers in a process of their own (the worker's composition): killed -9 in the middle of a
burst of 2,000 changes, then restarted; and riding out a restart of their DC.

The burst has every kind of change: 1,000 modifies of 20 "hot" contacts, interleaved with the
lives of 200 "cold" ones, each added, renamed and moved to another OU, made a member of a group,
then either removed from it and deleted, or modified and renamed again.

Both modes publish an object's latest state (DirSync and uSNChanged collapse the changes an
object gets between two reads), so "none lost" means: every object the burst touched, deleted
ones included, has published events; folded as the metaverse folds them, they give the object as
the directory holds it after the burst (DN, displayName, members; deleted or not); the newest
event of each object is at or after the USN of its last change (its uSNChanged); and per object,
positions never go backwards, across the kill and the restart included.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import ldap3
import pytest
from ldap3.protocol.microsoft import show_deleted_control

from connectors.ad.values import guid_text, same_dn
from streams.events import DirectoryChange, ObjectKind
from streams.rules.metaverse import SourceObject, apply_change
from tests.integration.ad.conftest import Directory
from tests.integration.ad.reader_harness import ReaderDeployment
from tests.integration.ad.test_usn_poll_reader import highest_usn
from tests.integration.gal import eventually

pytestmark = pytest.mark.integration

MODES = ["ad-dirsync", "ad-usn-poll"]
HOT, COLD = 20, 200  # each cold contact's life is 5 changes, each followed by a hot modify: 2,000 changes
KILL_AFTER = 400  # changes of the burst the reader has stored a position beyond when it is killed
CONTACT_CLASSES = ["top", "person", "organizationalPerson", "contact"]


def cold_life(connection: ldap3.Connection, ou: str, group: str, k: int) -> list[Callable[[], object]]:
    """The writes of cold contact k, in order."""
    added, moved = f"CN=cold {k},OU=b,{ou}", f"CN=moved {k},OU=a,{ou}"
    life = [
        lambda: connection.add(added, CONTACT_CLASSES, {"displayName": f"cold {k}"}),
        lambda: connection.modify_dn(added, f"CN=moved {k}", new_superior=f"OU=a,{ou}"),
        lambda: connection.modify(group, {"member": [(ldap3.MODIFY_ADD, [moved])]}),
    ]
    if k % 2 == 0:
        return life + [
            lambda: connection.modify(group, {"member": [(ldap3.MODIFY_DELETE, [moved])]}),
            lambda: connection.delete(moved),
        ]
    return life + [
        lambda: connection.modify(moved, {"displayName": [(ldap3.MODIFY_REPLACE, [f"cold {k} changed"])]}),
        lambda: connection.modify_dn(moved, f"CN=renamed {k}"),
    ]


def burst(directory: Directory, hot: list[str], group: str) -> None:
    with directory.dc.admin_connection(raise_exceptions=True) as connection:
        writes = [write for k in range(COLD) for write in cold_life(connection, directory.ou, group, k)]
        for j, write in enumerate(writes):
            write()
            connection.modify(hot[j % HOT], {"displayName": [(ldap3.MODIFY_REPLACE, [f"round {j // HOT}"])]})


def objects(directory: Directory) -> dict[str, dict]:
    """Everything under the test's OU, and the tombstones of what was deleted from OU a, by object id."""
    connection, root = directory.connection, directory.dc.base_dn
    wanted = ["objectGUID", "objectClass", "displayName", "member", "uSNChanged"]
    living = connection.extend.standard.paged_search(
        directory.ou, "(|(objectClass=contact)(objectClass=group))", attributes=wanted, paged_size=500,
        generator=False,
    )
    deleted = connection.extend.standard.paged_search(
        f"CN=Deleted Objects,{root}", f"(&(isDeleted=TRUE)(lastKnownParent=OU=a,{directory.ou}))",
        search_scope=ldap3.LEVEL, attributes=wanted, controls=[show_deleted_control(criticality=True)],
        paged_size=500, generator=False,
    )
    found = {}
    for entries, gone in ((living, False), (deleted, True)):
        for entry in (e for e in entries if e.get("type") == "searchResEntry"):
            raw = {name.lower(): values for name, values in entry["raw_attributes"].items()}
            found[guid_text(raw["objectguid"][0])] = {
                "dn": entry["dn"],
                "deleted": gone,
                "kind": ObjectKind.GROUP if b"group" in raw["objectclass"] else ObjectKind.CONTACT,
                "displayname": tuple(v.decode() for v in raw.get("displayname", ())),
                "member": {v.decode().lower() for v in raw.get("member", ())},
                "usn": int(raw["usnchanged"][0]),
            }
    return found


def by_object(changes: list[DirectoryChange]) -> dict[str, list[DirectoryChange]]:
    grouped: dict[str, list[DirectoryChange]] = {}
    for change in changes:
        grouped.setdefault(change.object_id, []).append(change)
    return grouped


def folded(changes: list[DirectoryChange]) -> SourceObject | None:
    state = None
    for change in changes:
        state = apply_change(state, change) or state
    return state


_LIFE_NAME = re.compile(r"cn=(?:cold|moved|renamed) (\d+),")


def identify(dn: str) -> str:
    """A cold contact by its number, whichever name of its life `dn` has."""
    named = _LIFE_NAME.match(dn.lower())
    return f"cold {named[1]}" if named else dn.lower()


def mismatch(state: SourceObject, expected: dict) -> str | None:
    """How the folded state differs from the directory's object, or None. Members are compared by
    identity: a member's rename changes no group (links are kept by object), so a group's events
    name its members by the DNs they had when the group last changed; such a DN may be one the
    reader never published for the member itself (read a moment before its rename, while the
    member's own changes fell into the next read), so identity comes from the burst's naming."""
    if expected["deleted"]:
        return None if state.deleted else "not deleted"
    actual = {
        "dn": same_dn(state.dn, expected["dn"]) and not state.deleted,
        "kind": state.kind is expected["kind"],
        "displayname": state.attributes.get("displayname", ()) == expected["displayname"],
        "member": {identify(v) for v in state.attributes.get("member", ())}
        == {identify(v) for v in expected["member"]},
    }
    wrong = [name for name, right in actual.items() if not right]
    return f"{wrong} differ: {state}" if wrong else None


@pytest.mark.parametrize("mode", MODES)
def test_kill_during_a_burst_of_2000_changes_then_restart_loses_none(
    alpha: Directory, reader: ReaderDeployment, mode: str
) -> None:
    hot = [f"CN=hot {i},OU=a,{alpha.ou}" for i in range(HOT)]
    for dn in hot:
        alpha.connection.add(dn, CONTACT_CLASSES, {"displayName": "before"})
    group = alpha.add_group("Burst Group")
    reader.start()
    eventually(lambda: reader.stored_usn() is not None, timeout=60, what="the snapshot's stored position")
    before = highest_usn(alpha)

    writer = threading.Thread(target=burst, args=(alpha, hot, group))
    writer.start()
    try:
        eventually(lambda: (reader.stored_usn() or 0) > before + KILL_AFTER, timeout=60,
                   what="a position stored well inside the burst")
        assert writer.is_alive(), "the burst ended before the reader stored a position inside it: no kill during it"
        reader.kill()
        killed_at = reader.stored_usn()
        reader.start()
    finally:
        writer.join()
    directory = objects(alpha)
    last = max(item["usn"] for item in directory.values())
    assert len(directory) == HOT + 1 + COLD and sum(item["deleted"] for item in directory.values()) == COLD // 2
    assert before + KILL_AFTER < killed_at < last, "the kill did not interrupt the burst"
    eventually(lambda: reader.stored_usn() >= last, timeout=120, interval=0.5, what="the restarted reader's catch-up")

    published = by_object(reader.changes())

    missing = sorted(item["dn"] for object_id, item in directory.items() if object_id not in published)
    assert not missing, f"{len(missing)} objects never published, e.g. {missing[:5]}"
    wrong = {}
    for object_id, item in directory.items():
        events = published[object_id]
        positions = [change.position for change in events]
        assert positions == sorted(positions), f"{item['dn']}: positions went backwards: {positions}"
        assert int(events[-1].position) >= item["usn"], f"{item['dn']}: newest event before its last change"
        if (problem := mismatch(folded(events), item)) is not None:
            wrong[item["dn"]] = problem
    assert not wrong, f"{len(wrong)} objects differ from the directory, e.g. {list(wrong.items())[:3]}"
    print(f"\n{mode}: killed at usn {killed_at} of {before}..{last}; "
          f"events={sum(map(len, published.values()))} objects={len(directory)}")


@pytest.mark.parametrize("mode", MODES)
def test_the_reader_rides_out_a_restart_of_its_dc(alpha: Directory, reader: ReaderDeployment, mode: str) -> None:
    reader.start()
    eventually(lambda: reader.stored_usn() is not None, timeout=60, what="the snapshot's stored position")
    before = alpha.add_user("Before Outage", displayName="Before Outage")
    alpha.connection.unbind()
    alpha.dc.stop()
    try:
        # The RetriableError's text (connectors.ldap.session), whatever the runner's log line around it.
        eventually(lambda: "forest alpha: LDAP" in reader.log_text, timeout=30, what="the reader noticing")
    finally:
        alpha.dc.start()
    alpha.connection.bind()
    after = alpha.add_user("After Outage", displayName="After Outage")

    def published() -> list[str]:
        return [c.dn for c in reader.changes() if c.snapshot_id is None]

    eventually(lambda: after in published(), timeout=60, what="the change made after the DC came back")
    assert reader.running, f"the reader process ended:\n{reader.log_text[-3000:]}"
    assert sorted(published()) == sorted([before, after]), "each change published exactly once"
