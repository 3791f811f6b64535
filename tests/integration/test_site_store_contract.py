"""The contract every site store passes (SiteSource + SiteWriter), run against each engine for
real: a SQLite file and the rig's PostgreSQL server."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from connectors.sites import SqlSiteStore, open_store
from connectors.sites.engines import PostgresEngine
from connectors.sites.store import token_counter as counter
from idsync.rig.ports import free_port
from idsync.rig.postgres import PostgresServer
from streams.contracts import FullReadReason, PermanentError, RetriableError
from streams.site_events import MembershipOp


@dataclass
class Harness:
    """One engine: how to open its store, take it down and bring it back, and restore a backup."""

    engine: str
    location: str
    # Brings the database back as it was at backup(); the store must be reopened after it.
    backup: Callable[[str], None]
    restore: Callable[[], None]
    break_connection: Callable[[SqlSiteStore], Callable[[], None]]

    def open(self, retain_changes: int = 1000) -> SqlSiteStore:
        return open_store(self.location, retain_changes=retain_changes, create=True)


def _sqlite_harness(tmp_path: Path) -> Harness:
    path = tmp_path / "sites.db"
    copy = tmp_path / "sites.db.backup"

    def break_connection(store: SqlSiteStore) -> Callable[[], None]:
        store.engine.close()  # the next call opens the file again, and finds it gone
        path.rename(tmp_path / "moved-away.db")
        return lambda: (tmp_path / "moved-away.db").rename(path)

    return Harness("sqlite", str(path), backup=lambda site: shutil.copyfile(path, copy),
                   restore=lambda: shutil.copyfile(copy, path), break_connection=break_connection)


def _postgres_harness(server: PostgresServer) -> Harness:
    saved: dict[str, int] = {}

    def backup(site: str) -> None:
        with psycopg.connect(server.superuser_conninfo) as conn:
            saved[site] = conn.execute("SELECT last_token FROM sites WHERE site_id = %s", (site,)).fetchone()[0]

    def restore() -> None:
        # What a restore of an older dump does to one site: its log and counter go back.
        with psycopg.connect(server.superuser_conninfo) as conn:
            for site, token in saved.items():
                conn.execute("DELETE FROM site_changes WHERE site_id = %s AND token > %s", (site, token))
                conn.execute("UPDATE sites SET last_token = %s WHERE site_id = %s", (token, site))

    def break_connection(store: SqlSiteStore) -> Callable[[], None]:
        assert isinstance(store.engine, PostgresEngine)
        pid = store.engine.backend_pid()
        with psycopg.connect(server.superuser_conninfo) as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        return lambda: None

    return Harness("postgresql", server.conninfo, backup=backup, restore=restore, break_connection=break_connection)


@pytest.fixture(params=["sqlite", "postgresql"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if request.param == "sqlite":
        return _sqlite_harness(tmp_path)
    return _postgres_harness(request.getfixturevalue("postgres_server"))


@pytest.fixture
def store(harness: Harness) -> Iterator[SqlSiteStore]:
    store = harness.open()
    yield store
    store.close()


def test_members_and_changes_come_back_in_order(store: SqlSiteStore, unique_name: str) -> None:
    site = f"{unique_name}-hr"
    store.create_site(site, "Human resources")
    first = store.changes(site, None)
    assert first.full_read_needed is FullReadReason.NO_TOKEN and first.changes == ()
    assert store.add_member(site, "alice", {"title": "Engineer"})
    assert store.add_member(site, "bob")
    assert not store.add_member(site, "bob")
    assert store.change_properties(site, "alice", {"title": "Lead"}) == {"title": "Lead"}
    assert store.remove_member(site, "bob")
    assert not store.remove_member(site, "bob")

    batch = store.changes(site, first.token)
    assert [(c.member_login, c.op) for c in batch.changes] == [
        ("alice", MembershipOp.ADDED), ("bob", MembershipOp.ADDED),
        ("alice", MembershipOp.PROPERTIES_CHANGED), ("bob", MembershipOp.REMOVED)]
    assert [counter(c.change_token) for c in batch.changes] == [1, 2, 3, 4]
    assert batch.changes[2].properties == {"title": "Lead"}
    assert counter(batch.token) == 4 and batch.full_read_needed is None
    assert store.changes(site, batch.token).changes == ()

    members, token = store.members(site)
    assert [(m.login, m.person, dict(m.properties)) for m in members] == [("alice", None, {"title": "Lead"})]
    assert token == batch.token
    assert site in store.sites()


def test_the_same_token_gives_the_same_changes(store: SqlSiteStore, unique_name: str) -> None:
    site = f"{unique_name}-it"
    store.create_site(site)
    for n in range(5):
        store.add_member(site, f"user{n}", {"n": str(n)})
    page = store.changes(site, "0", limit=2)
    assert [c.member_login for c in page.changes] == ["user0", "user1"] and counter(page.token) == 2
    assert store.changes(site, "0", limit=2) == page
    rest = store.changes(site, page.token)
    assert [c.member_login for c in rest.changes] == ["user2", "user3", "user4"]
    assert store.changes(site, page.token) == rest


def test_changes_of_one_site_stay_in_that_site(store: SqlSiteStore, unique_name: str) -> None:
    store.create_site(f"{unique_name}-a")
    store.create_site(f"{unique_name}-b")
    store.add_member(f"{unique_name}-a", "alice")
    assert store.changes(f"{unique_name}-b", "0").changes == ()
    assert store.members(f"{unique_name}-b") == ([], "0")


def test_concurrent_writers_get_one_gap_free_sequence_of_tokens(harness: Harness, unique_name: str) -> None:
    site = f"{unique_name}-busy"
    stores = [harness.open() for _ in range(4)]
    try:
        stores[0].create_site(site)

        def add(n: int) -> None:
            for m in range(25):
                stores[n].add_member(site, f"user{n}-{m}", {"n": str(m)})
                stores[n].write_properties(site, f"user{n}-{m}", {"n": "written"})

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(add, range(4)))
        batch = stores[0].changes(site, "0", limit=1000)
        assert [counter(c.change_token) for c in batch.changes] == list(range(1, 201))
        assert sorted(c.member_login for c in batch.changes if c.op is MembershipOp.ADDED) == sorted(
            f"user{n}-{m}" for n in range(4) for m in range(25))
        members, token = stores[0].members(site)
        assert len(members) == 100 and token == batch.token
        assert {m.properties["n"] for m in members} == {"written"}
    finally:
        for store in stores:
            store.close()


def test_an_expired_token_says_so(harness: Harness, unique_name: str) -> None:
    store = harness.open(retain_changes=3)
    try:
        site = f"{unique_name}-sales"
        store.create_site(site)
        for n in range(6):
            store.add_member(site, f"user{n}")
        batch = store.changes(site, "1")
        assert batch.full_read_needed is FullReadReason.EXPIRED and batch.changes == () and counter(batch.token) == 6
        assert [counter(c.change_token) for c in store.changes(site, "3").changes] == [4, 5, 6]
    finally:
        store.close()


def restored_after(harness: Harness, site: str, *members: str) -> str:
    """The site with alice, backed up, then `members` added: the token read then. The store is
    restored from the backup before this returns (reopen it)."""
    store = harness.open()
    try:
        store.create_site(site)
        store.add_member(site, "alice")
        harness.backup(site)
        for member in members:
            store.add_member(site, member)
        token = store.changes(site, "0").token
    finally:
        store.close()
    harness.restore()
    return token


def test_a_restored_store_is_detected(harness: Harness, unique_name: str) -> None:
    site = f"{unique_name}-legal"
    token = restored_after(harness, site, "bob", "carol")
    assert counter(token) == 3
    store = harness.open()
    try:
        batch = store.changes(site, token)
        assert batch.full_read_needed is FullReadReason.RESTORED and counter(batch.token) == 1
    finally:
        store.close()


def test_a_restored_store_that_went_on_past_the_token_is_detected(harness: Harness, unique_name: str) -> None:
    """After the restore the site was written to again, past the token's counter: that counter
    now names another change, which a bare counter could not tell."""
    site = f"{unique_name}-restored"
    token = restored_after(harness, site, "bob")
    store = harness.open()
    try:
        store.add_member(site, "mallory")
        store.add_member(site, "carol")
        batch = store.changes(site, token)
        assert batch.full_read_needed is FullReadReason.RESTORED and batch.changes == ()
        assert counter(batch.token) == 3 and store.changes(site, batch.token).full_read_needed is None
    finally:
        store.close()


def test_writes_are_idempotent(store: SqlSiteStore, unique_name: str) -> None:
    site = f"{unique_name}-ops"
    store.create_site(site)
    store.add_member(site, "alice", {"title": "Engineer", "mail": "alice@example.test"})
    wanted = {"title": "Lead", "department": "Ops"}
    assert store.write_properties(site, "alice", wanted) == wanted
    token = store.changes(site, "0").token
    assert store.write_properties(site, "alice", wanted) == {}
    assert store.changes(site, token).changes == ()
    members, _ = store.members(site)
    assert members[0].properties == {"title": "Lead", "department": "Ops", "mail": "alice@example.test"}


def test_a_write_never_adds_a_member(store: SqlSiteStore, unique_name: str) -> None:
    site = f"{unique_name}-pr"
    store.create_site(site)
    with pytest.raises(PermanentError, match="no member"):
        store.write_properties(site, "mallory", {"title": "x"})
    assert store.members(site) == ([], "0")
    with pytest.raises(PermanentError, match="no site"):
        store.changes(f"{unique_name}-nowhere", "0")


def test_resolved_person_is_kept_and_not_logged(store: SqlSiteStore, unique_name: str) -> None:
    site = f"{unique_name}-fin"
    store.create_site(site)
    store.add_member(site, "alice")
    store.set_person(site, "alice", "person-1")
    members, token = store.members(site)
    assert members[0].person == "person-1" and counter(token) == 1


def test_a_store_that_is_down_raises_retriable_and_recovers(harness: Harness, unique_name: str) -> None:
    store = harness.open()
    site = f"{unique_name}-down"
    try:
        store.create_site(site)
        bring_back = harness.break_connection(store)
        with pytest.raises(RetriableError):
            store.add_member(site, "alice")
        bring_back()
        assert store.add_member(site, "alice")
        assert [c.member_login for c in store.changes(site, "0").changes] == ["alice"]
    finally:
        store.close()


def test_workers_migrating_one_new_database_at_once(postgres_server: PostgresServer, unique_name: str) -> None:
    database = unique_name.replace("-", "_")
    with psycopg.connect(postgres_server.superuser_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(database), sql.Identifier(postgres_server.user)))
    location = postgres_server.conninfo.rsplit("/", 1)[0] + "/" + database
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_store(location), range(4)))
    for store in stores:
        assert store.migrate() == []
        store.close()
    with psycopg.connect(location) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]


def test_a_postgresql_server_that_is_not_there_is_retriable() -> None:
    with pytest.raises(RetriableError, match="postgresql site store") as raised:
        open_store(f"postgresql://idsync:secret-pw@127.0.0.1:{free_port()}/idsync")
    assert "secret-pw" not in str(raised.value)


def test_a_postgresql_server_stopped_and_started_again(tmp_path: Path, unique_name: str) -> None:
    with PostgresServer(tmp_path, name="restarted") as server:
        store = open_store(server.conninfo)
        try:
            store.create_site(unique_name)
            server.pause()
            with pytest.raises(RetriableError):
                store.add_member(unique_name, "alice")
            with pytest.raises(RetriableError):
                store.changes(unique_name, "0")
            server.start()
            assert store.add_member(unique_name, "alice")
            assert counter(store.changes(unique_name, "0").token) == 1
        finally:
            store.close()


def test_a_missing_sqlite_file_is_retriable_not_created(tmp_path: Path) -> None:
    with pytest.raises(RetriableError, match="sqlite site store"):
        open_store(tmp_path / "absent.db")
    assert not (tmp_path / "absent.db").exists()
