"""The worker's site components as the worker runs them (idsync/runtime.py run_site_reader and
run_site_writer, from a topology's sites section) against the real broker: a PostgreSQL store
reached with its password from password_env flows while a SQLite store whose file is not there
yet waits, reported down; once the file exists it flows too."""

from __future__ import annotations

import asyncio
import copy
import inspect
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from connectors.sites import open_store
from idsync.rig import KafkaBroker
from idsync.rig.postgres import PostgresServer
from idsync.kafka_clients import producer_for
from idsync.site_components import run_site_reader, run_site_writer
from streams.config.topology import Topology, parse_topology
from streams.kafka.topics import ensure_topics
from streams.monitoring.metrics import READER_UP, SITE_SINK_UP
from streams.processors.site_reader import reader_label
from streams.site_events import SiteMembershipChange, SiteWrite, decode_site_change_topic
from tests.integration.site_stores import closing, records
from tests.unit.test_topology import MINIMAL

pytestmark = pytest.mark.integration


def topology(broker: KafkaBroker, prefix: str, sites: dict, base_dir: Path) -> Topology:
    data = copy.deepcopy(MINIMAL)
    names = ("changes", "positions", "contacts", "errors", "conflicts", "held_deletes", "site_changes", "site_writes")
    data["kafka"] = {"bootstrap_servers": broker.bootstrap_servers, "partitions": 3, "replication_factor": 1,
                     "topics": {name: f"{prefix}.{name.replace('_', '-')}" for name in names}}
    data["streams"] = {"app_id": prefix}
    data["sites"] = sites
    return parse_topology(data, source=base_dir / "topology.yaml")


async def until(condition, timeout: float = 30.0) -> None:
    """Wait for `condition` (a function, or one returning an awaitable) to hold."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await _result(condition()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def _result(value: object) -> object:
    return await value if inspect.isawaitable(value) else value


async def test_each_store_flows_on_its_own_and_a_store_missing_at_start_is_waited_for(
        kafka_broker: KafkaBroker, postgres_server: PostgresServer, unique_name: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    database = "c" + unique_name[-6:]
    with psycopg.connect(postgres_server.superuser_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database),
                                                                  sql.Identifier(postgres_server.user)))
    monkeypatch.setenv("IDSYNC_TEST_SITES_PASSWORD", postgres_server.password)
    url = f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/{database}"
    topo = topology(kafka_broker, unique_name, {"stores": [
        {"name": "pg", "url": url, "password_env": "IDSYNC_TEST_SITES_PASSWORD", "poll_interval_seconds": 0.1},
        {"name": "lite", "url": "sites.db", "poll_interval_seconds": 0.1},
    ]}, tmp_path)
    await ensure_topics(topo.kafka)
    pg_settings, lite_settings = topo.sites.stores
    with closing(pg := open_store(postgres_server.conninfo.rsplit("/", 1)[0] + "/" + database)):
        pg.create_site("team")
        pg.add_member("team", "alice")

    async def published(store: str) -> list[SiteMembershipChange]:
        events = [decode_site_change_topic(r.value) for r in await records(topo.kafka, topo.kafka.topics.site_changes)]
        return [e for e in events if isinstance(e, SiteMembershipChange) and e.store == store]

    async def send(write: SiteWrite) -> None:
        producer = producer_for(topo.kafka)
        await producer.start()
        try:
            await producer.send_and_wait(topo.kafka.topics.site_writes, key=write.key(), value=write.to_bytes())
        finally:
            await producer.stop()

    def properties(location: str, site: str) -> dict:
        with closing(store := open_store(location)):
            return {m.login: dict(m.properties) for m in store.members(site)[0]}

    pg_admin = postgres_server.conninfo.rsplit("/", 1)[0] + "/" + database
    tasks = [asyncio.create_task(run(topo, settings)) for run in (run_site_reader, run_site_writer)
             for settings in topo.sites.stores]
    try:
        await until(lambda: published("pg"))
        await send(SiteWrite(store="pg", site="team", login="alice", person="p1", properties={"JobTitle": "Lead"},
                             reason="profile"))
        await until(lambda: properties(pg_admin, "team") == {"alice": {"JobTitle": "Lead"}})
        assert READER_UP.labels(reader_label("lite"))._value.get() == 0
        assert SITE_SINK_UP.labels("lite")._value.get() == 0
        assert not Path(lite_settings.location).exists()  # waited for, never created by idsync

        with closing(lite := open_store(lite_settings.location, create=True)):
            lite.create_site("club")
            lite.add_member("club", "bob")
        await until(lambda: published("lite"), timeout=45)
        await send(SiteWrite(store="lite", site="club", login="bob", person="p2", properties={"JobTitle": "Chair"},
                             reason="profile"))
        await until(lambda: properties(lite_settings.location, "club") == {"bob": {"JobTitle": "Chair"}}, timeout=45)
        assert READER_UP.labels(reader_label("lite"))._value.get() == 1
        assert SITE_SINK_UP.labels("lite")._value.get() == 1
        assert pg_settings.password is not None
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results)
