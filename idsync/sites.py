"""`idsync sites`: person sync's administration, in the spirit of SharePoint's stsadm.

- `status`: per site, the last synchronization (full or incremental, when, why, token) as the
  membership reader saved it on the positions topic, and the members the engine knows, resolved
  or not and flagged (resolved to a person who left the environment), from the changelog of its
  login index (streams/processors/logins.py), read whole like any compacted topic.
- `members SITE`: each member of a site: login, state, person.
- `sync [--full] [--site ID]`: one synchronization pass now (lib: streams/processors/site_reader.py).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from idsync.operations import Read, moment, table
from streams.config.topology import Topology
from streams.events import EventDecodeError
from streams.kafka.compacted import latest_values
from streams.processors.app import SITE_LOGINS_TABLE
from streams.rules.profiles import LoginEntry, login_owner, site_counts
from streams.site_events import SiteSyncState

_COUNTS = ("members", "resolved", "unresolved", "flagged")


def logins_changelog(topology: Topology) -> str:
    """faust names a table's changelog topic <app id>-<table>-changelog."""
    return f"{topology.streams.app_id}-{SITE_LOGINS_TABLE}-changelog"


def sync_states(values: Mapping[bytes | None, bytes]) -> list[SiteSyncState]:
    states = []
    for key, raw in values.items():
        if key is None or not key.startswith(b"site/"):
            continue
        try:
            states.append(SiteSyncState.from_bytes(raw))
        except EventDecodeError:
            continue
    return states


def login_entries(values: Mapping[bytes | None, bytes]) -> list[LoginEntry]:
    entries = []
    for raw in values.values():
        try:
            entries.append(LoginEntry.from_bytes(raw))
        except EventDecodeError:
            continue
    return entries


def status_rows(topology: Topology, states: Iterable[SiteSyncState], entries: Iterable[LoginEntry]) -> list[dict]:
    """One row per site: of the configured stores' sites the reader synchronized, and of any site
    the engine knows members of."""
    counts = site_counts(entries)
    by_site = {f"{s.store}/{s.site}": s for s in states}
    stores = {store.name for store in topology.sites.stores} if topology.sites is not None else set()
    rows = []
    for site_id in sorted(set(by_site) | set(counts)):
        state = by_site.get(site_id)
        store, _, site = site_id.partition("/")
        if state is None and store not in stores:
            continue
        rows.append({
            "store": store, "site": site,
            "mode": state.mode if state else None, "at": state.at if state else None,
            "reason": state.reason if state else None, "token": state.token if state else None,
            "last_full_at": state.last_full_at if state else None,
            "last_full_reason": state.last_full_reason if state else None,
            **{name: counts.get(site_id, {}).get(name, 0) for name in _COUNTS},
        })
    return rows


def status_table(rows: Sequence[dict]) -> str:
    if not rows:
        return "no site synchronized yet"
    return table(
        ("STORE", "SITE", "LAST SYNC", "AT", "WHY", "TOKEN", "MEMBERS", "UNRESOLVED", "FLAGGED"),
        [(r["store"], r["site"], r["mode"] or "-", moment(r["at"]) if r["at"] else "-", r["reason"] or "-",
          r["token"] or "-", str(r["members"]), str(r["unresolved"]), str(r["flagged"])) for r in rows],
    )


def member_rows(entries: Iterable[LoginEntry], site_id: str) -> list[dict]:
    rows = []
    for entry in entries:
        membership = entry.memberships.get(site_id)
        if membership is None:
            continue
        owner, contested = login_owner(entry.claims)
        state = ("contested" if contested else "unresolved") if owner is None else (
            "flagged" if entry.claims[owner]["state"] == "departed" else "resolved")
        rows.append({"login": membership.get("login", entry.login), "state": state, "person": owner,
                     "claimants": list(contested), "properties": membership.get("properties", {})})
    return sorted(rows, key=lambda r: r["login"].casefold())


def members_table(rows: Sequence[dict], site_id: str) -> str:
    if not rows:
        return f"no members known for site {site_id}"
    body = table(("LOGIN", "STATE", "PERSON"), [(r["login"], r["state"], r["person"] or "-") for r in rows])
    return f"{body}\n{len(rows)} member{'' if len(rows) == 1 else 's'}"


def site_id_of(name: str, known: Iterable[str]) -> str | None:
    """`store/site`, or a site name that only one store has."""
    known = sorted(set(known))
    if name in known:
        return name
    matches = [site_id for site_id in known if site_id.partition("/")[2] == name]
    return matches[0] if len(matches) == 1 else None


async def show_status(topology: Topology, *, json: bool = False, read: Read = latest_values) -> int:
    try:
        states = sync_states(await read(topology.kafka, topology.kafka.topics.positions))
        entries = login_entries(await read(topology.kafka, logins_changelog(topology)))
    except KafkaError as exc:
        return _unreachable(topology, exc)
    rows = status_rows(topology, states, entries)
    print(_json(rows) if json else status_table(rows))
    return 0


async def show_members(topology: Topology, site: str, *, json: bool = False, read: Read = latest_values) -> int:
    try:
        states = sync_states(await read(topology.kafka, topology.kafka.topics.positions))
        entries = login_entries(await read(topology.kafka, logins_changelog(topology)))
    except KafkaError as exc:
        return _unreachable(topology, exc)
    known = {f"{s.store}/{s.site}" for s in states} | {k for e in entries for k in e.memberships}
    site_id = site_id_of(site, known)
    if site_id is None:
        print(f"no site {site!r} known (known: {', '.join(sorted(known)) or 'none'}); name it as store/site "
              "when two stores have a site of that name", file=sys.stderr)
        return 2
    rows = member_rows(entries, site_id)
    print(_json(rows) if json else members_table(rows, site_id))
    return 0


async def sync_now(topology: Topology, *, site: str | None = None, full: bool = False, json: bool = False) -> int:
    """One synchronization pass of every site (or one), as the worker's reader makes them: the
    running worker's reader goes on from its own token afterwards (it publishes again what this
    pass published, which changes nothing downstream)."""
    from aiokafka.errors import KafkaError as KafkaFailure

    from connectors.sites import open_site_store
    from idsync.kafka_clients import producer_for
    from streams.contracts import ConnectorError
    from streams.kafka.site_positions import SitePositionStore
    from streams.processors.site_reader import SiteReaderRunner

    assert topology.sites is not None
    kafka = topology.kafka
    stores = topology.sites.stores
    wanted = site
    if site is not None and "/" in site:
        name, _, wanted = site.partition("/")
        stores = tuple(s for s in stores if s.name == name)
        if not stores:
            print(f"no site store named {name!r} in {topology.source}", file=sys.stderr)
            return 2
    producer = producer_for(kafka)
    rows: list[dict] = []
    try:
        await producer.start()
        for settings in stores:
            store = await asyncio.to_thread(open_site_store, settings)
            try:
                if wanted is not None and wanted not in await asyncio.to_thread(store.sites):
                    continue
                runner = SiteReaderRunner(
                    store, store=settings.name, producer=producer, topics=kafka.topics, partitions=None,
                    positions=SitePositionStore(producer, kafka=kafka, topic=kafka.topics.positions),
                    poll_interval=settings.poll_interval_seconds,
                )
                for state in await runner.sync_once(site=wanted, full=full):
                    rows.append({"store": state.store, "site": state.site, "mode": state.mode,
                                 "reason": state.reason, "changes": state.changes, "token": state.token,
                                 "at": state.at})
                    if not json:
                        print(f"synchronized store={state.store} site={state.site} mode={state.mode} "
                              f"reason={state.reason} changes={state.changes} token={state.token}", file=sys.stderr)
            finally:
                await asyncio.to_thread(store.close)
    except KafkaFailure as exc:
        return _unreachable(topology, exc)
    except ConnectorError as exc:
        print(f"idsync sites sync: {exc}", file=sys.stderr)
        return 1
    finally:
        await producer.stop()
    if site is not None and not rows:
        print(f"no site {site!r} in any site store of {topology.source}", file=sys.stderr)
        return 2
    print(_json(rows) if json else table(
        ("STORE", "SITE", "SYNC", "WHY", "CHANGES", "TOKEN"),
        [(r["store"], r["site"], r["mode"], r["reason"], str(r["changes"]), r["token"]) for r in rows]))
    return 0


def _json(rows: Any) -> str:
    return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode()


def _unreachable(topology: Topology, exc: KafkaError) -> int:
    print(f"cannot reach Kafka at {topology.kafka.bootstrap_servers}: {exc}", file=sys.stderr)
    return 1
