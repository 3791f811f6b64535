"""Person sync end to end (issue #10's Done-when): real Kafka, real slapd forests, a worker
process, and the site store in a real database, SQLite and PostgreSQL.

The test plays the collaboration platform through the store's admin operations (create a site,
add and remove members) and checks what idsync wrote through the store's own change log: every
write of idsync is a `properties-changed` entry there, so "no further writes" and "none written
twice" are read from the log, not from idsync's logs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.sites import SqlSiteStore, open_store
from connectors.sites.store import token_counter
from tests.integration.gal import GalDeployment, deploy, eventually

pytestmark = pytest.mark.integration

PASSWORD_ENV = "IDSYNC_TEST_SITES_PASSWORD"
REPLICATE = {"displayName": "Title", "title": "JobTitle", "mail": "EMail"}
# Within the 5 s once the worker runs; the first sync of a cold worker gets longer.
SETTLE = 15.0
FIRST_SYNC = 90.0


@dataclass
class SiteStore:
    """A test's own site store: how the topology names it, and the platform's side of it."""

    url: str
    # What the platform's side opens: url, with the password for PostgreSQL.
    location: str
    env: dict[str, str]
    admin: SqlSiteStore

    def log(self, site: str) -> list[tuple[int, str, str, dict]]:
        """The site's change log: (token, login, op, properties), oldest first."""
        batch = self.admin.changes(site, "0", limit=1_000_000)
        assert batch.full_read_needed is None, "the test's log was pruned"
        return [(token_counter(c.change_token), c.member_login, str(c.op), dict(c.properties)) for c in batch.changes]

    def properties(self, site: str) -> dict[str, dict[str, str]]:
        members, _ = self.admin.members(site)
        return {m.login: dict(m.properties) for m in members}

    def member_rows(self, site: str) -> list[tuple[str, str]]:
        """The membership list as stored (login and the site's copy of the profile)."""
        members, _ = self.admin.members(site)
        return [(m.login, json.dumps(dict(m.properties), sort_keys=True)) for m in members]


@pytest.fixture(params=["sqlite", "postgresql"])
def site_store(request: pytest.FixtureRequest, tmp_path: Path, unique_name: str) -> Iterator[SiteStore]:
    if request.param == "sqlite":
        url = str(tmp_path / "sites.db")
        store = SiteStore(url=url, location=url, env={}, admin=open_store(url, create=True))
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.create_database(unique_name.replace("-", "_"))
        with_password = url.replace(f"{server.user}@", f"{server.user}:{server.password}@", 1)
        store = SiteStore(url=url, location=with_password, env={PASSWORD_ENV: server.password},
                          admin=open_store(with_password))
    try:
        yield store
    finally:
        store.admin.close()


def deploy_with_sites(kafka_broker, directories, tmp_path: Path, name: str, store: SiteStore) -> GalDeployment:
    entry = {"name": "sp", "url": store.url, "poll_interval_seconds": 0.2}
    if store.env:
        entry["password_env"] = PASSWORD_ENV
    deployment = deploy(
        tmp_path, name, kafka_broker, directories._asdict(),
        sites={"stores": [entry], "replicate": REPLICATE,
               "logins": ["{mail}", {"template": "ALPHA\\{uid}", "forests": ["forest-a"]}]},
    )
    deployment.env.update(store.env)
    return deployment


def status(gal: GalDeployment) -> dict[str, dict]:
    return {row["site"]: row for row in json.loads(gal.idsync("sites", "status", "--json"))}


def idsync_writes(store: SiteStore, site: str, login: str, since: int = 0) -> list[dict]:
    return [props for token, who, op, props in store.log(site) if who == login and op == "properties-changed"
            and token > since]


def test_membership_up_profile_down_removal_departure_and_return(kafka_broker, directories, tmp_path, unique_name,
                                                                  site_store: SiteStore) -> None:
    gal = deploy_with_sites(kafka_broker, directories, tmp_path, unique_name, site_store)
    store = site_store.admin
    hr, eng, ops = (f"{unique_name}-{s}" for s in ("hr", "eng", "ops"))
    for site in (hr, eng, ops):
        store.create_site(site)
    ada = gal.add_user("forest_a", "ada", displayName="Ada Lovelace", title="Analyst")
    gal.add_user("forest_b", "bob", displayName="Bob Babbage", title="Engineer")
    store.add_member(hr, "ALPHA\\ada")
    store.add_member(eng, "ada@forest_a.test")
    store.add_member(ops, "bob@forest_b.test")
    store.add_member(hr, "ghost@nowhere.test", {"Title": "Ghost"})
    try:
        gal.start_worker()
        ada_profile = {"Title": "Ada Lovelace", "JobTitle": "Analyst", "EMail": "ada@forest_a.test"}
        eventually(lambda: site_store.properties(hr).get("ALPHA\\ada") == ada_profile, timeout=FIRST_SYNC,
                   what="Ada's properties on hr")
        eventually(lambda: site_store.properties(eng).get("ada@forest_a.test") == ada_profile, timeout=SETTLE,
                   what="Ada's properties on eng")
        eventually(lambda: site_store.properties(ops).get("bob@forest_b.test", {}).get("Title") == "Bob Babbage",
                   timeout=SETTLE, what="Bob's properties on ops")
        assert site_store.properties(hr)["ghost@nowhere.test"] == {"Title": "Ghost"}, "an unresolved member got a write"
        first = eventually(lambda: (s := status(gal)).get(hr, {}).get("members") == 2 and s, timeout=SETTLE,
                           what="hr's status")
        # The first synchronization was full; the next ones (idsync's writes read back) incremental.
        assert first[hr]["last_full_reason"] == "no-token" and first[hr]["mode"] in ("full", "incremental")
        assert (first[hr]["unresolved"], first[hr]["flagged"]) == (1, 0)

        # A new member gets the current properties at once.
        store.add_member(hr, "bob@forest_b.test")
        started = time.monotonic()
        eventually(lambda: site_store.properties(hr).get("bob@forest_b.test", {}).get("JobTitle") == "Engineer",
                   timeout=SETTLE, what="Bob's properties on hr")
        added_after = time.monotonic() - started

        # A title change reaches every site of the person, only the title, and no other site.
        ops_log = len(site_store.log(ops))
        hr_mark, eng_mark = site_store.log(hr)[-1][0], site_store.log(eng)[-1][0]
        gal.modify("forest_a", ada, title="Director")
        started = time.monotonic()
        eventually(lambda: idsync_writes(site_store, hr, "ALPHA\\ada", hr_mark) == [
            {**ada_profile, "JobTitle": "Director"}], timeout=SETTLE, what="the title on hr")
        eventually(lambda: len(idsync_writes(site_store, eng, "ada@forest_a.test", eng_mark)) == 1,
                   timeout=SETTLE, what="the title on eng")
        changed_after = time.monotonic() - started
        gal.wait_until_processed()
        assert len(site_store.log(ops)) == ops_log, "a site where Ada is no member was written"
        assert status(gal)[hr]["mode"] == "incremental"

        # A removed member is no longer synchronized to that site.
        store.remove_member(eng, "ada@forest_a.test")
        gal.wait_until_processed()
        eng_mark = site_store.log(eng)[-1][0]
        hr_mark = site_store.log(hr)[-1][0]
        gal.modify("forest_a", ada, title="Chief")
        eventually(lambda: len(idsync_writes(site_store, hr, "ALPHA\\ada", hr_mark)) == 1, timeout=SETTLE,
                   what="the next title on hr")
        gal.wait_until_processed()
        assert site_store.log(eng)[-1][0] == eng_mark, "written to a site after the member was removed"

        # Deleted from every forest: flagged, the membership list untouched, no further writes.
        listed = site_store.member_rows(hr)
        hr_mark = site_store.log(hr)[-1][0]
        gal.delete("forest_a", ada)
        eventually(lambda: status(gal)[hr]["flagged"] == 1, timeout=SETTLE, what="Ada flagged on hr")
        gal.wait_until_processed()
        assert site_store.member_rows(hr) == listed, "the membership list changed"
        assert site_store.log(hr)[-1][0] == hr_mark, "written after the user left"
        members = {row["login"]: row for row in json.loads(gal.idsync("sites", "members", hr, "--json"))}
        assert members["ALPHA\\ada"]["state"] == "flagged" and members["ghost@nowhere.test"]["state"] == "unresolved"

        # Re-created: unflagged and synchronized again.
        gal.add_user("forest_a", "ada", displayName="Ada King", title="Chief")
        eventually(lambda: site_store.properties(hr)["ALPHA\\ada"]["Title"] == "Ada King", timeout=SETTLE,
                   what="Ada synchronized again")
        eventually(lambda: status(gal)[hr]["flagged"] == 0, timeout=SETTLE, what="Ada unflagged")
        final = status(gal)[hr]
        assert (final["members"], final["resolved"], final["unresolved"]) == (3, 2, 1)
        print(f"\n{site_store.url.split(':')[0]}: member added -> written {added_after:.2f}s; "
              f"title changed -> written to both sites {changed_after:.2f}s")
    finally:
        gal.stop_workers()


def test_a_full_read_again_after_an_expired_token_reconciles_the_list(kafka_broker, directories, tmp_path,
                                                                       unique_name, site_store: SiteStore) -> None:
    """A token the store no longer keeps makes the next synchronization of that site full: the
    membership list is read whole; members removed meanwhile are dropped, the others corrected."""
    gal = deploy_with_sites(kafka_broker, directories, tmp_path, unique_name, site_store)
    site = f"{unique_name}-hr"
    small = open_store(site_store.location, retain_changes=3)
    small.create_site(site)
    for uid in ("ann", "ben", "cat"):
        gal.add_user("forest_a", uid, displayName=uid.title())
        small.add_member(site, f"{uid}@forest_a.test")
    try:
        gal.start_worker()
        eventually(lambda: all(p.get("Title") for p in site_store.properties(site).values()), timeout=FIRST_SYNC,
                   what="the first synchronization")
        gal.stop_workers()
        # While idsync is down, more changes than the store keeps: its token expires.
        small.remove_member(site, "ben@forest_a.test")
        for n in range(4):
            small.change_properties(site, "cat@forest_a.test", {"Title": f"edited {n}"})
        gal.start_worker()
        eventually(lambda: site_store.properties(site)["cat@forest_a.test"]["Title"] == "Cat", timeout=FIRST_SYNC,
                   what="Cat's edited title corrected")
        row = eventually(lambda: (r := status(gal)[site])["members"] == 2 and r, timeout=SETTLE,
                         what="Ben dropped from the site")
        assert (row["last_full_reason"], row["members"]) == ("expired", 2)
    finally:
        small.close()
        gal.stop_workers()


def test_kill_during_a_burst_of_2000_membership_changes_loses_none_and_writes_none_twice(
        kafka_broker, directories, tmp_path, unique_name, site_store: SiteStore) -> None:
    gal = deploy_with_sites(kafka_broker, directories, tmp_path, unique_name, site_store)
    store, site = site_store.admin, f"{unique_name}-burst"
    store.create_site(site)
    users = [f"u{n:02d}" for n in range(50)]
    for uid in users:
        gal.add_user("forest_a", uid, displayName=f"User {uid}")
    logins = [f"{uid}@forest_a.test" for uid in users]

    def burst() -> None:
        # 2,000 changes: 20 rounds of 50 adds and 50 removes.
        for _ in range(20):
            for login in logins:
                store.add_member(site, login)
            for login in logins:
                store.remove_member(site, login)

    try:
        gal.start_worker()
        eventually(lambda: site in status(gal), timeout=FIRST_SYNC, what="the site's first synchronization")
        gal.wait_until_processed(timeout=FIRST_SYNC)
        writer = threading.Thread(target=burst)
        writer.start()
        try:
            eventually(lambda: len(site_store.log(site)) > 600, timeout=120, what="a third of the burst")
            assert writer.is_alive(), "the burst ended before the kill: no kill during it"
            gal.workers[-1].kill()
            gal.start_worker()
        finally:
            writer.join()
        for login in logins:
            store.add_member(site, login)
        for login in logins:
            eventually(lambda login=login: site_store.properties(site)[login].get("Title"), timeout=120,
                       what=f"{login}'s properties")
        gal.wait_until_processed(timeout=60)
    finally:
        gal.stop_workers()
    log = site_store.log(site)
    assert sum(op != "properties-changed" for _, _, op, _ in log) == 2000 + len(logins)
    # Each membership (an add up to the next add or removal) got at most one write.
    twice = []
    writes_since_add: dict[str, int] = {}
    for token, login, op, _ in log:
        if op == "properties-changed":
            writes_since_add[login] = writes_since_add.get(login, 0) + 1
            if writes_since_add[login] > 1:
                twice.append((token, login))
        else:
            writes_since_add[login] = 0
    assert not twice, f"written twice: {twice[:5]}"
    print(f"\nburst: {len(log)} log entries, {sum(op == 'properties-changed' for _, _, op, _ in log)} written by idsync")
    assert {login: props["Title"] for login, props in site_store.properties(site).items()} == {
        f"{uid}@forest_a.test": f"User {uid}" for uid in users}


def test_a_site_store_that_is_down_is_retried_while_other_sites_and_the_gal_flow_go_on(
        kafka_broker, directories, tmp_path, unique_name, postgres_server) -> None:
    local = str(tmp_path / "local.db")
    remote = postgres_server.create_database(unique_name.replace("-", "_"))
    remote_admin = open_store(remote.replace(f"{postgres_server.user}@",
                                             f"{postgres_server.user}:{postgres_server.password}@", 1))
    local_admin = open_store(local, create=True)
    gal = deploy(
        tmp_path, unique_name, kafka_broker, directories._asdict(),
        sites={"stores": [{"name": "local", "url": local, "poll_interval_seconds": 0.2},
                          {"name": "remote", "url": remote, "password_env": PASSWORD_ENV,
                           "poll_interval_seconds": 0.2}],
               "replicate": REPLICATE},
    )
    gal.env[PASSWORD_ENV] = postgres_server.password
    for admin in (local_admin, remote_admin):
        admin.create_site("team")
        admin.add_member("team", "ann@forest_a.test")
    gal.add_user("forest_a", "ann", displayName="Ann")
    try:
        gal.start_worker()
        for admin in (local_admin, remote_admin):
            eventually(lambda admin=admin: admin.members("team")[0][0].properties.get("Title") == "Ann",
                       timeout=FIRST_SYNC, what="Ann on both stores")
        remote_admin.close()
        postgres_server.pause()
        try:
            gal.add_user("forest_a", "ben", displayName="Ben")
            local_admin.add_member("team", "ben@forest_a.test")
            gal.modify("forest_a", f"uid=ann,{gal.people('forest_a')}", displayName="Ann Down")
            eventually(lambda: {m.login: m.properties.get("Title") for m in local_admin.members("team")[0]} == {
                "ann@forest_a.test": "Ann Down", "ben@forest_a.test": "Ben"}, timeout=SETTLE,
                what="the other store's writes while one is down")
            eventually(lambda: any(e.get("displayname") == ["Ben"] for e in gal.contacts().values()),
                       timeout=SETTLE, what="the GAL contact of a user added while a site store is down")
            log = gal.workers[-1].log_path.read_text()
            assert "outage started" in log and "store=remote" in log
        finally:
            postgres_server.start()
        remote_admin = open_store(remote.replace(f"{postgres_server.user}@",
                                                 f"{postgres_server.user}:{postgres_server.password}@", 1))
        eventually(lambda: remote_admin.members("team")[0][0].properties.get("Title") == "Ann Down", timeout=120,
                   what="the write held while the store was down, applied once it is back")
    finally:
        gal.stop_workers()
        local_admin.close()
        remote_admin.close()


def test_sites_sync_runs_a_pass_now_first_full_then_incremental_or_full_on_request(
        kafka_broker, directories, tmp_path, unique_name, site_store: SiteStore) -> None:
    gal = deploy_with_sites(kafka_broker, directories, tmp_path, unique_name, site_store)
    site = f"{unique_name}-hr"
    site_store.admin.create_site(site)
    site_store.admin.add_member(site, "ann@forest_a.test")

    def sync(*args: str) -> dict:
        rows = {row["site"]: row for row in json.loads(gal.idsync("sites", "sync", "--json", *args))}
        return rows[site]

    first = sync()
    assert (first["mode"], first["reason"], first["changes"]) == ("full", "no-token", 1)
    site_store.admin.add_member(site, "ben@forest_a.test")
    site_store.admin.remove_member(site, "ann@forest_a.test")
    second = sync("--site", site)
    assert (second["mode"], second["reason"], second["changes"]) == ("incremental", "changes", 2)
    again = sync("--full", "--site", f"sp/{site}")
    assert (again["mode"], again["reason"], again["changes"]) == ("full", "requested", 1)
    row = status(gal)[site]
    assert (row["mode"], row["last_full_reason"], row["token"]) == ("full", "requested", again["token"])
