"""Composition root: one worker process running every reader, the processor and the sink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import faust
from aiokafka import AIOKafkaConsumer

from connectors.ad.dirsync import DirSyncReader
from connectors.ad.usn_poll import UsnPollReader
from connectors.ldap.contacts import LdapContactWriter
from connectors.ldap.generic_poll import GenericPollReader
from connectors.openldap.accesslog_poll import AccesslogPollReader
from connectors.openldap.syncrepl import AccesslogSyncReader
from idsync.kafka_clients import kafka_watched, producer_for
from idsync.site_components import run_site_reader, run_site_writer, site_writer_groups
from idsync.status_page import page as status_page
from streams.config.forests import Forest
from streams.config.topology import KafkaSettings, Topology
from streams.contracts import ChangeReader
from streams.kafka.clients import KafkaAccessError, check_access, client_settings
from streams.kafka.lag import LagProbe
from streams.kafka.lease import lease_group, lease_topic, run_while_held
from streams.kafka.positions import PositionStore
from streams.kafka.publisher import ChangePublisher
from streams.config.metaverse import engine_settings
from streams.kafka.topics import ensure_topics
from streams.monitoring.backoff import Backoff
from streams.monitoring.metrics import (
    READER_OUTAGES, READER_UP, SINK_OUTAGES, SINK_UP, LagMetrics, serve_metrics,
)
from streams.monitoring.outages import Outage
from streams.monitoring.secrets import wait_for_secret
from streams.processors.app import add_component, create_app
from streams.processors.site_reader import reader_label
from streams.processors.sink_runner import SinkRunner, open_dn_conflicts
from streams.processors.source_runner import SourceRunner

log = logging.getLogger(__name__)

# The longest wait between two attempts to reach Kafka at start.
KAFKA_WAIT_MAX_SECONDS = 30.0
# What `idsync run --components` chooses from; a worker runs all three unless told otherwise.
COMPONENTS = ("readers", "processor", "sinks")
READERS = {reader.mode: reader for reader in (AccesslogPollReader, AccesslogSyncReader, DirSyncReader, UsnPollReader, GenericPollReader)}


def build_worker(topology: Topology, components: frozenset[str] = frozenset(COMPONENTS)) -> faust.App:
    """A worker running `components` (COMPONENTS): the readers, each under a lease so that it runs
    on one worker of the deployment at a time; the metaverse processor, sharing the engine's
    partitions with the other workers' processors; the sinks, sharing their topics' partitions."""
    app = create_app(topology, engine="processor" in components)
    stores = topology.sites.stores if topology.sites is not None else ()
    if "readers" in components:
        for forest in topology.forests:
            add_component(app, f"reader_{forest.name}", lambda forest=forest: run_leased(
                topology, f"forest-{forest.name}", lambda: run_reader(topology, forest), gauge_label=forest.name))
        for store in stores:
            add_component(app, f"site_reader_{store.name}", lambda store=store: run_leased(
                topology, f"site-{store.name}", lambda: run_site_reader(topology, store),
                gauge_label=reader_label(store.name)))
    if "sinks" in components:
        add_component(app, "contact_writer", lambda: run_contact_writer(topology))
        for store in stores:
            add_component(app, f"site_writer_{store.name}", lambda store=store: run_site_writer(topology, store))
    if topology.metrics is not None:
        add_component(app, "metrics", lambda: run_metrics_endpoint(topology))
    return app


async def run_leased(topology: Topology, lease: str, run: Callable[[], Awaitable[None]], *, gauge_label: str) -> None:
    """Run a reader while this worker holds its lease (streams/kafka/lease.py). A worker that
    hands the lease on stops reporting the reader's up gauge: the new holder reports it."""

    async def reader() -> None:
        try:
            await run()
        finally:
            with contextlib.suppress(KeyError):
                READER_UP.remove(gauge_label)

    app_id = topology.streams.app_id
    await run_while_held(topology.kafka, topic=lease_topic(app_id), group=lease_group(app_id, lease), lease=lease,
                         session_timeout_seconds=topology.streams.session_timeout_seconds, work=reader)


def run_worker(topology: Topology, *, loglevel: str = "info", components: frozenset[str] = frozenset(COMPONENTS)) -> None:
    """Check that Kafka accepts idsync's connection, declare idsync's topics, then run the worker
    until it is stopped (SIGTERM/SIGINT). Kafka refusing the connection (bad credentials, an
    untrusted certificate) or a Kafka password that cannot be read ends it with one line saying
    why, not the retries of every client; a Kafka that cannot be reached is waited for."""
    # faust sets up logging when its worker starts; the lines before it look alike.
    logging.basicConfig(level=loglevel.upper(), format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    report_missing_secrets(topology)
    asyncio.run(require_kafka_access(topology.kafka, wait=True))
    asyncio.run(ensure_topics(topology.kafka, topology.streams.app_id))
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = build_worker(topology, components)
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    worker.execute_from_commandline()


def report_missing_secrets(topology: Topology) -> None:
    """Every forest (and site store) password that cannot be read, at ERROR with its YAML path, before anything
    starts: the components that need it wait for it (streams/monitoring/secrets.py)."""
    for forest in topology.forests:
        if problem := forest.password.problem():
            waits = "its reader" + (" and the contact writer" if forest.role == "central" else "")
            log.error("secret unavailable forest=%s error=%r: %s will wait for it, the other forests sync",
                      forest.name, problem, waits)
    for store in topology.sites.stores if topology.sites is not None else ():
        if store.password is not None and (problem := store.password.problem()):
            log.error("secret unavailable store=%s error=%r: its site reader and writer will wait for it, "
                      "the other stores and forests sync", store.name, problem)


async def require_kafka_access(
    kafka: KafkaSettings, *, wait: bool = False, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
) -> None:
    """SystemExit with one line when Kafka's password cannot be read or Kafka refuses idsync;
    when no broker can be reached, the same unless `wait`: then retried with backoff (up to
    KAFKA_WAIT_MAX_SECONDS between attempts), each attempt logged."""
    if kafka.security.sasl is not None and (problem := kafka.security.sasl.password.problem()):
        raise SystemExit(f"idsync: {problem}")
    backoff, started = Backoff(first=1.0, cap=KAFKA_WAIT_MAX_SECONDS), time.monotonic()
    attempts = 0
    while True:
        try:
            await check_access(kafka)
        except KafkaAccessError as exc:
            if exc.refused or not wait:
                raise SystemExit(f"idsync: {exc}") from None
            attempts += 1
            delay = backoff.next_delay()
            log.warning("kafka unreachable, waiting for it before anything starts error=%r attempt=%d retry_in=%.0fs",
                        str(exc), attempts, delay)
            await sleep(delay)
            continue
        if attempts:
            log.info("kafka reachable after %.0fs of waiting attempts=%d", time.monotonic() - started, attempts)
        return


def make_reader(forest: Forest) -> ChangeReader:
    try:
        reader = READERS[forest.change_capture.mode]
    except KeyError:
        raise ValueError(
            f"forest {forest.name}: change_capture mode {forest.change_capture.mode!r} has no reader "
            f"in this build (available: {', '.join(sorted(READERS))})"
        ) from None
    return reader(forest)


async def run_reader(topology: Topology, forest: Forest) -> None:
    await wait_for_secret(forest.password, f"component=reader forest={forest.name}", up=READER_UP.labels(forest.name),
                          waits="this forest's reader waits for it, the other forests sync")
    producer = producer_for(topology.kafka)
    reader = make_reader(forest)
    await producer.start()
    try:
        positions = PositionStore(producer, kafka=topology.kafka, topic=topology.kafka.topics.positions)
        runner = SourceRunner(
            reader, producer=producer, positions=positions, topics=topology.kafka.topics, kinds=forest.object_kinds
        )
        watched = Outage(f"component=reader forest={forest.name} kafka={topology.kafka.bootstrap_servers}",
                         up=READER_UP.labels(forest.name), outages=READER_OUTAGES.labels(forest.name))
        async with kafka_watched(producer.client, watched, topology.kafka.bootstrap_servers):
            await runner.run()
    finally:
        await reader.close()
        await producer.stop()


async def run_full_import(topology: Topology, forests: list[Forest], *, allow_mass_delete: bool) -> list[str]:
    """Publish a snapshot of each forest, bracketed for mark and sweep; the running worker
    applies it. The readers' positions are left alone: their streams go on as before."""
    await require_kafka_access(topology.kafka)
    await ensure_topics(topology.kafka)
    producer = producer_for(topology.kafka)
    await producer.start()
    summaries = []
    try:
        for forest in forests:
            reader = make_reader(forest)
            try:
                batch = await reader.read(None)
            finally:
                await reader.close()
            publisher = ChangePublisher(
                producer, topics=topology.kafka.topics, forest=forest.name, kinds=forest.object_kinds
            )
            snapshot = await publisher.publish_snapshot(batch, allow_mass_delete=allow_mass_delete)
            summaries.append(
                f"forest={forest.name} snapshot={snapshot} objects={len(batch.changes)} rejected={len(batch.rejected)}"
            )
    finally:
        await producer.stop()
    return summaries


def contact_writer_group(topology: Topology) -> str:
    return f"{topology.streams.app_id}-contact-writer"


async def run_contact_writer(topology: Topology) -> None:
    await wait_for_secret(topology.central.password, f"component=contact-writer forest={topology.central.name}",
                          up=SINK_UP, waits="the contact writer waits for it, the readers go on publishing")
    kafka = topology.kafka
    consumer = AIOKafkaConsumer(
        kafka.topics.contacts,
        **client_settings(kafka),
        group_id=contact_writer_group(topology),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = producer_for(topology.kafka)
    writer = LdapContactWriter(topology.central)
    await producer.start()
    await consumer.start()
    runner = SinkRunner(
        writer, consumer=consumer, producer=producer, topics=kafka.topics, conflicts_topic=kafka.topics.conflicts,
        open_conflicts=lambda: open_dn_conflicts(kafka, kafka.topics.conflicts),
    )
    watched = Outage(f"component=contact-writer kafka={kafka.bootstrap_servers}", up=SINK_UP, outages=SINK_OUTAGES)
    try:
        # aiokafka's consumer keeps its client private (the producer's is `client`); 0.14 names it _client.
        async with kafka_watched(consumer._client, watched, kafka.bootstrap_servers):
            await runner.run()
    finally:
        await consumer.stop()
        await producer.stop()
        await asyncio.to_thread(writer.close)


async def run_metrics_endpoint(topology: Topology) -> None:
    """Serve the worker's metrics, with the lag of the processor (faust's group is the app id)
    on every topic the metaverse engine consumes and of the contact writer on the contacts topic."""
    auth = topology.metrics.auth if topology.metrics is not None else None
    if auth is not None and (problem := auth.secret.problem()):
        # Read again at every scrape: it applies as soon as it is there.
        log.error("secret unavailable component=metrics error=%r: every scrape is refused until it can be read",
                  problem)
    topics = engine_settings(topology).topics
    probe = LagProbe(topology.kafka)
    await probe.start()
    try:
        watched = (
            *((topology.streams.app_id, topic) for topic in topics.consumed()),
            (contact_writer_group(topology), topics.contacts),
            *((group, topology.kafka.topics.site_writes) for group in site_writer_groups(topology)),
        )
        lag = LagMetrics(probe, watched)
        await serve_metrics(topology.metrics, lag, status_page=lambda: status_page(topology, lag))
    finally:
        await probe.stop()
