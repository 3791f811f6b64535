"""Both AD readers in a process of their own (the worker's composition): killed -9 in the middle of a
burst of 2,000 changes, then restarted; and riding out a restart of their DC.

Both modes publish an object's latest state (DirSync and uSNChanged collapse the changes an
object gets between two reads), so "none lost" means: every object the burst wrote has a
published event; folded as the metaverse folds them, each object's events give the object as
the directory holds it after the burst; the newest event of each object is at or after the USN
of its last change (its uSNChanged); and per object, positions never go backwards, across the
kill and the restart included.
"""

from __future__ import annotations

import threading

import ldap3
import pytest

from connectors.ad_values import guid_text, same_dn
from streams.events import DirectoryChange, ObjectKind
from streams.metaverse import SourceObject, apply_change
from tests.integration.ad.conftest import Directory
from tests.integration.ad.reader_harness import ReaderDeployment
from tests.integration.ad.test_usn_poll_reader import highest_usn
from tests.integration.gal import eventually

pytestmark = pytest.mark.integration

MODES = ["ad-dirsync", "ad-usn-poll"]
HOT, ROUNDS = 20, 50  # 1,000 modifies of 20 contacts, each followed by the add of a new contact: 2,000 changes
KILL_AFTER = 400  # changes of the burst the reader has stored a position beyond when it is killed
CONTACT_CLASSES = ["top", "person", "organizationalPerson", "contact"]


def contacts(directory: Directory) -> dict[str, dict]:
    """The contacts under the test's OU by object id: DN, displayName and uSNChanged."""
    found = directory.connection.extend.standard.paged_search(
        directory.ou, "(objectClass=contact)", attributes=["objectGUID", "displayName", "uSNChanged"],
        paged_size=500, generator=False,
    )
    return {
        guid_text(e["raw_attributes"]["objectGUID"][0]): {
            "dn": e["dn"],
            "displayname": tuple(v.decode() for v in e["raw_attributes"].get("displayName", ())),
            "usn": int(e["raw_attributes"]["uSNChanged"][0]),
        }
        for e in found
        if e.get("type") == "searchResEntry"
    }


def burst(directory: Directory, hot: list[str]) -> None:
    with directory.dc.admin_connection(raise_exceptions=True) as connection:
        for round_ in range(ROUNDS):
            for i, dn in enumerate(hot):
                connection.modify(dn, {"displayName": [(ldap3.MODIFY_REPLACE, [f"round {round_}"])]})
                connection.add(f"CN=cold {round_} {i},OU=b,{directory.ou}", CONTACT_CLASSES,
                               {"displayName": f"cold {round_} {i}"})


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


@pytest.mark.parametrize("mode", MODES)
def test_kill_during_a_burst_of_2000_changes_then_restart_loses_none(
    alpha: Directory, reader: ReaderDeployment, mode: str
) -> None:
    hot = [f"CN=hot {i},OU=a,{alpha.ou}" for i in range(HOT)]
    for dn in hot:
        alpha.connection.add(dn, CONTACT_CLASSES, {"displayName": "before"})
    reader.start()
    eventually(lambda: reader.stored_usn() is not None, timeout=60, what="the snapshot's stored position")
    before = highest_usn(alpha)

    writer = threading.Thread(target=burst, args=(alpha, hot))
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
    directory = contacts(alpha)
    last = max(item["usn"] for item in directory.values())
    assert before + KILL_AFTER < killed_at < last, "the kill did not interrupt the burst"
    eventually(lambda: reader.stored_usn() >= last, timeout=120, interval=0.5, what="the restarted reader's catch-up")

    published = by_object(reader.changes())
    assert len(directory) == HOT * (ROUNDS + 1)
    missing = sorted(item["dn"] for object_id, item in directory.items() if object_id not in published)
    assert not missing, f"{len(missing)} objects never published, e.g. {missing[:5]}"
    for object_id, item in directory.items():
        events = published[object_id]
        positions = [change.position for change in events]
        assert positions == sorted(positions), f"{item['dn']}: positions went backwards: {positions}"
        state = folded(events)
        assert same_dn(state.dn, item["dn"]) and state.kind is ObjectKind.CONTACT
        assert state.attributes["displayname"] == item["displayname"], f"{item['dn']}: {state.attributes}"
        assert int(events[-1].position) >= item["usn"], f"{item['dn']}: newest event before its last change"
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
        # The RetriableError's text (connectors.ldap_session), whatever the runner's log line around it.
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
