"""`idsync demo`, person sync's part: two sites in the topology's SQLite site store, members
from both forests; then a title change flowing down to both sites of its person, a member
removed, and a user deleted from the forests flagged as departed yet still listed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import ldap3

from connectors.sites import SqlSiteStore, open_store
from idsync.operations import table
from idsync.rig import SlapdInstance
from idsync.rig.worker import WorkerProcess
from idsync.sites import login_entries, logins_changelog, status_rows, status_table, sync_states
from streams.config.topology import Topology
from streams.kafka.compacted import latest_values

# Site -> members' logins (their mail: the shipped topology's login rule).
SITES = {
    "engineering": ("ada.lovelace@forest-a.example", "alan.turing@forest-a.example",
                    "barbara.liskov@forest-b.example"),
    "research": ("ada.lovelace@forest-a.example", "grace.hopper@forest-a.example", "edsger.dijkstra@forest-b.example"),
}
SHOWN = ("Title", "EMail", "JobTitle")
NEW_TITLE = "Countess of Lovelace"
REMOVED = ("engineering", "alan.turing@forest-a.example")


class DemoSiteError(RuntimeError):
    pass


def prepare(topology: Topology) -> SqlSiteStore:
    """A fresh SQLite store at the topology's first site store, with the demo's sites."""
    assert topology.sites is not None
    settings = topology.sites.stores[0]
    if settings.engine != "sqlite":
        raise DemoSiteError(f"sites.stores[0]: the demo plays the platform on a SQLite file, not {settings.engine}")
    path = Path(settings.location)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    store = open_store(path, create=True)
    for site, members in SITES.items():
        store.create_site(site, site.title())
        for login in members:
            store.add_member(site, login)
        print(f"added site {site} with {len(members)} members in site store {settings.name}")
    return store


def show(store: SqlSiteStore, topology: Topology, worker: WorkerProcess, forests: dict[str, SlapdInstance],
         ada_dn: str, timeout: float) -> None:
    """The sites filled, then the title change and the removal, each waited for."""
    _wait(lambda: all(store.members(site)[0] and all(m.properties.get("Title") for m in store.members(site)[0])
                      for site in SITES), worker, timeout, "every member's properties on both sites")
    _print_members(store, "Site members with the properties idsync wrote down")

    with forests["forest-a"].admin_connection() as connection:
        connection.modify(ada_dn, {"title": [(ldap3.MODIFY_REPLACE, [NEW_TITLE])]})
    _wait(lambda: all(_properties(store, site).get(SITES[site][0], {}).get("JobTitle") == NEW_TITLE for site in SITES),
          worker, timeout, "the new title on both sites")
    print(f"\nChanged title of {ada_dn} to {NEW_TITLE!r}: written to Ada's entry on both sites, and only there.")

    store.remove_member(*REMOVED)
    print(f"Removed {REMOVED[1]} from site {REMOVED[0]}: idsync no longer writes to it there.")


def show_departed(store: SqlSiteStore, topology: Topology, worker: WorkerProcess, timeout: float) -> None:
    """After the demo deleted a user from its forest: flagged, and still a member."""
    listed = {site: len(store.members(site)[0]) for site in SITES}
    rows = _wait(lambda: _settled(topology, listed), worker, timeout,
                 "the deleted user flagged as departed, and the removed member gone")
    _print_members(store, "Site members after the delete (the membership lists are left as they are)")
    print("\nidsync sites status:")
    print(status_table(rows))


def _settled(topology: Topology, listed: dict[str, int]) -> list[dict] | None:
    """The status rows once one member is flagged and each site has as many members as it lists."""
    async def read() -> list[dict]:
        states = sync_states(await latest_values(topology.kafka, topology.kafka.topics.positions))
        entries = login_entries(await latest_values(topology.kafka, logins_changelog(topology)))
        return status_rows(topology, states, entries)

    rows = asyncio.run(read())
    members = {row["site"]: row["members"] for row in rows}
    return rows if any(row["flagged"] for row in rows) and members == listed else None


def _properties(store: SqlSiteStore, site: str) -> dict[str, dict[str, str]]:
    return {m.login: dict(m.properties) for m in store.members(site)[0]}


def _print_members(store: SqlSiteStore, title: str) -> None:
    print(f"\n{title}:")
    rows = [(site, login, *(props.get(name, "") for name in SHOWN))
            for site in SITES for login, props in sorted(_properties(store, site).items())]
    print("\n".join(f"  {line}" for line in table(("SITE", "MEMBER", *SHOWN), rows).splitlines()))


def _wait(probe: Callable[[], object], worker: WorkerProcess, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        if found := probe():
            return found
        if not worker.running:
            raise DemoSiteError(f"the worker exited (code {worker.returncode}); see {worker.log_path}")
        if time.monotonic() > deadline:
            raise DemoSiteError(f"{what}: not within {timeout:.0f}s; see {worker.log_path}")
        time.sleep(0.2)
