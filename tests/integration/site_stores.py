"""What the site reader and site writer integration tests share: a site store of the test's own in
each engine (a SQLite file, or a database of its own on the rig's PostgreSQL server, reached with
the password from an environment variable as a topology names it), how to take it down and bring
it back, and the test's own Kafka topics."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from psycopg import sql

from connectors.sites import SqlSiteStore, open_site_store, open_store
from idsync.rig import KafkaBroker
from idsync.rig.postgres import PostgresServer
from streams.config.security import PostgresTls, Secret, local_postgres
from streams.config.sites import SiteStoreSettings
from streams.config.topology import KafkaSettings, Topics
from streams.kafka.topics import ensure_topics

PARTITIONS = 3


@dataclass
class SiteDb:
    """One test's site store. `settings` is what a topology gives the worker; `admin` plays the
    collaboration platform (with `retain_changes`)."""

    engine: str
    settings: SiteStoreSettings
    admin_location: str
    # Takes the store down (for every connection, the runner's too) and returns how to bring it back.
    take_down: Callable[[SqlSiteStore], Callable[[], None]]
    backup: Callable[[], None]
    restore: Callable[[], None]

    def admin(self, retain_changes: int = 1000) -> SqlSiteStore:
        return open_store(self.admin_location, retain_changes=retain_changes)

    def open(self) -> SqlSiteStore:
        return open_site_store(self.settings)


def sqlite_db(tmp_path: Path, name: str) -> SiteDb:
    path = tmp_path / f"{name}.db"
    open_store(path, create=True).close()
    moved, copy = tmp_path / f"{name}.moved-away", tmp_path / f"{name}.backup"

    def take_down(store: SqlSiteStore) -> Callable[[], None]:
        path.rename(moved)
        store.close()  # under the store's lock: the next call opens the file again, and finds it gone
        return lambda: moved.rename(path)

    return SiteDb("sqlite", SiteStoreSettings(name=name, location=str(path), password=None, poll_interval_seconds=0.1),
                  str(path), take_down, backup=lambda: shutil.copyfile(path, copy),
                  restore=lambda: shutil.copyfile(copy, path))


def postgres_db(server: PostgresServer, name: str, monkeypatch: pytest.MonkeyPatch) -> SiteDb:
    database = name.replace("-", "_")
    with psycopg.connect(server.superuser_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database),
                                                                  sql.Identifier(server.user)))
    variable = f"IDSYNC_TEST_SITES_PASSWORD_{database.upper()}"
    monkeypatch.setenv(variable, server.password)
    url = f"postgresql://{server.user}@127.0.0.1:{server.port}/{database}"
    superuser = server.superuser_conninfo.rsplit("/", 1)[0] + "/" + database
    saved: list[int] = []

    def take_down(store: SqlSiteStore) -> Callable[[], None]:
        server.pause()
        return server.start

    def backup() -> None:
        with psycopg.connect(superuser) as conn:
            saved[:] = [row[0] for row in conn.execute("SELECT last_token FROM sites ORDER BY site_id")]

    def restore() -> None:
        # What a restore of an older dump does: each site's log and counter go back.
        with psycopg.connect(superuser) as conn:
            sites = [row[0] for row in conn.execute("SELECT site_id FROM sites ORDER BY site_id")]
            for site, token in zip(sites, saved):
                conn.execute("DELETE FROM site_changes WHERE site_id = %s AND token > %s", (site, token))
                conn.execute("UPDATE sites SET last_token = %s WHERE site_id = %s", (token, site))

    # No tls key, on 127.0.0.1: as the topology's loader reads it, no TLS is required.
    settings = SiteStoreSettings(name=name, location=url, password=Secret(env=variable), poll_interval_seconds=0.1,
                                 tls=PostgresTls(required=not local_postgres(url)))
    open_site_store(settings).close()
    return SiteDb("postgresql", settings, f"{url.replace('@', ':' + server.password + '@', 1)}", take_down,
                  backup, restore)


@pytest.fixture(params=["sqlite", "postgresql"])
def site_db(request: pytest.FixtureRequest, tmp_path: Path, unique_name: str,
            monkeypatch: pytest.MonkeyPatch) -> SiteDb:
    name = "s" + unique_name[-6:]
    if request.param == "sqlite":
        return sqlite_db(tmp_path, name)
    return postgres_db(request.getfixturevalue("postgres_server"), name, monkeypatch)


async def kafka_settings(broker: KafkaBroker, prefix: str) -> KafkaSettings:
    """The test's own topics (site-changes and site-writes with PARTITIONS partitions), created."""
    names = ("changes", "positions", "contacts", "errors", "site_changes", "site_writes")
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, client_id=prefix, partitions=PARTITIONS,
                          replication_factor=1, topics=Topics(**{name: f"{prefix}.{name}" for name in names}))
    await ensure_topics(kafka)
    return kafka


async def records(kafka: KafkaSettings, topic: str, count: int = PARTITIONS) -> list:
    """Every record of the topic as of now, partition by partition, in order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found = []
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                found += (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
        return found
    finally:
        await consumer.stop()


async def committed(kafka: KafkaSettings, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


@contextlib.contextmanager
def closing(*stores: SqlSiteStore) -> Iterator[None]:
    try:
        yield
    finally:
        for store in stores:
            store.close()
