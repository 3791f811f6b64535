"""`idsync sites`: what status and members show, from the positions topic and the login index."""

import copy

from idsync.sites import login_entries, member_rows, members_table, site_id_of, status_rows, status_table, sync_states
from streams.config.topology import parse_topology
from streams.rules.profiles import LoginEntry
from streams.site_events import SiteSyncState
from tests.unit.test_topology_metaverse import BASE

TOPOLOGY = parse_topology(copy.deepcopy(BASE) | {"sites": {"stores": [{"name": "sp", "url": "/tmp/sites.db"}]}})


def membership(site: str, login: str) -> dict:
    return {"store": "sp", "site": site, "login": login, "token": "1", "snapshot_id": None, "properties": {}}


ENTRIES = [
    LoginEntry(login="ada@x", claims={"p1": {"state": "live", "at": "t"}},
               memberships={"sp/hr": membership("hr", "Ada@X"), "sp/eng": membership("eng", "ada@x")}),
    LoginEntry(login="bob@x", claims={"p2": {"state": "departed", "at": "t"}},
               memberships={"sp/hr": membership("hr", "bob@x")}),
    LoginEntry(login="ann@x", claims={"p3": {"state": "live", "at": "t"}, "p4": {"state": "live", "at": "t"}},
               memberships={"sp/hr": membership("hr", "ann@x")}),
    LoginEntry(login="cy@x", claims={"p5": {"state": "live", "at": "t"}}),  # claimed, on no site
]
STATES = [
    SiteSyncState(store="sp", site="hr", token="12", mode="incremental", reason="changes", at="2026-12-04T08:00:00+00:00",
                  changes=3, last_full_at="2026-12-04T07:00:00+00:00", last_full_reason="no-token"),
    SiteSyncState(store="sp", site="empty", token="0", mode="full", reason="no-token", at="2026-12-04T07:00:00+00:00",
                  changes=0, last_full_at="2026-12-04T07:00:00+00:00", last_full_reason="no-token"),
    SiteSyncState(store="gone", site="old", token="5", mode="full", reason="no-token", at="t", changes=1),
]


def test_status_counts_members_unresolved_and_flagged_per_site():
    rows = {(r["store"], r["site"]): r for r in status_rows(TOPOLOGY, STATES, ENTRIES)}
    assert set(rows) == {("sp", "hr"), ("sp", "eng"), ("sp", "empty"), ("gone", "old")}
    hr = rows["sp", "hr"]
    assert (hr["mode"], hr["token"], hr["last_full_reason"]) == ("incremental", "12", "no-token")
    assert (hr["members"], hr["resolved"], hr["unresolved"], hr["flagged"]) == (3, 2, 1, 1)
    assert rows["sp", "eng"]["mode"] is None and rows["sp", "eng"]["members"] == 1
    table = status_table(list(rows.values()))
    assert "LAST SYNC" in table.splitlines()[0] and "2026-12-04 08:00:00Z" in table


def test_members_of_a_site_with_their_state():
    rows = member_rows(ENTRIES, "sp/hr")
    assert [(r["login"], r["state"], r["person"]) for r in rows] == [
        ("Ada@X", "resolved", "p1"), ("ann@x", "contested", None), ("bob@x", "flagged", "p2")]
    assert rows[1]["claimants"] == ["p3", "p4"]
    assert members_table(rows, "sp/hr").endswith("3 members")
    assert members_table([], "sp/nope") == "no members known for site sp/nope"


def test_a_site_is_named_by_store_and_site_or_by_a_name_only_one_store_has():
    known = ["sp/hr", "sp/eng", "other/hr"]
    assert site_id_of("sp/hr", known) == "sp/hr"
    assert site_id_of("eng", known) == "sp/eng"
    assert site_id_of("hr", known) is None  # two stores have one
    assert site_id_of("nope", known) is None


def test_records_that_are_not_ours_are_skipped():
    values = {b"site/sp/hr": STATES[0].to_bytes(), b"forest/a": b'{"schema":"idsync.reader-position"}',
              b"site/sp/bad": b"not json"}
    assert sync_states(values) == [STATES[0]]
    assert login_entries({b"login:a": ENTRIES[0].to_bytes(), b"x": b"{}"}) == [ENTRIES[0]]
