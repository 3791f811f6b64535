"""The worker's components for person sync: per site store of topology's `sites` section, a
membership reader (streams/processors/site_reader.py) and a profile writer (site_sink.py), each
with its own Kafka clients, each waiting out its store's outages while the rest of the worker
goes on."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer
from prometheus_client import Gauge

from connectors.sites import SqlSiteStore, open_site_store
from idsync.kafka_clients import kafka_watched, producer_for
from streams.config.sites import SiteStoreSettings
from streams.config.topology import Topology
from streams.contracts import NeedsAttention, RetriableError
from streams.kafka.clients import client_settings
from streams.kafka.site_positions import SitePositionStore
from streams.monitoring.metrics import READER_OUTAGES, READER_UP, SITE_SINK_OUTAGES, SITE_SINK_UP
from streams.monitoring.outages import Outage
from streams.monitoring.secrets import wait_for_secret
from streams.processors.site_reader import ATTENTION_RETRY_SECONDS, SiteReaderRunner, reader_label
from streams.processors.site_sink import SiteSinkRunner, site_writer_group

log = logging.getLogger(__name__)


async def open_site_store_when_up(settings: SiteStoreSettings, outage: Outage) -> SqlSiteStore:
    """The store, once its database answers: a store down at start is an outage like any other,
    retried with backoff while the other components go on. A connection refused for a reason only
    a person can mend (its TLS certificate) is logged as an ERROR at every attempt, tried again
    every ATTENTION_RETRY_SECONDS, not in a fast retry loop."""
    while True:
        try:
            store = await asyncio.to_thread(open_site_store, settings)
        except RetriableError as exc:
            await asyncio.sleep(outage.failed(exc))
            continue
        except NeedsAttention as exc:
            delay = max(outage.failed(exc), ATTENTION_RETRY_SECONDS)
            log.error("site store needs attention store=%s error=%r retry_in=%.0fs", settings.name, str(exc), delay)
            await asyncio.sleep(delay)
            continue
        outage.succeeded()
        return store


async def _wait_for_site_password(settings: SiteStoreSettings, component: str, up: Gauge) -> None:
    if settings.password is not None:
        await wait_for_secret(settings.password, f"component={component} store={settings.name}", up=up,
                              waits=f"this store's {component} waits for it, the other stores and forests sync")


async def run_site_reader(topology: Topology, settings: SiteStoreSettings) -> None:
    """The membership reader of one site store (streams/processors/site_reader.py)."""
    label = reader_label(settings.name)
    up, outages = READER_UP.labels(label), READER_OUTAGES.labels(label)
    await _wait_for_site_password(settings, "site-reader", up)
    kafka = topology.kafka
    producer = producer_for(kafka)
    await producer.start()
    store: SqlSiteStore | None = None
    try:
        watched = Outage(f"component=site-reader store={settings.name} kafka={kafka.bootstrap_servers}",
                         up=up, outages=outages)
        async with kafka_watched(producer.client, watched, kafka.bootstrap_servers):
            store = await open_site_store_when_up(
                settings, Outage(f"component=site-reader store={settings.name}", up=up, outages=outages))
            runner = SiteReaderRunner(
                store, store=settings.name, producer=producer, topics=kafka.topics, partitions=None,
                positions=SitePositionStore(producer, kafka=kafka, topic=kafka.topics.positions),
                poll_interval=settings.poll_interval_seconds,
            )
            await runner.run()
    finally:
        if store is not None:
            await asyncio.to_thread(store.close)
        await producer.stop()


async def run_site_writer(topology: Topology, settings: SiteStoreSettings) -> None:
    """The profile writer of one site store (streams/processors/site_sink.py)."""
    up, outages = SITE_SINK_UP.labels(settings.name), SITE_SINK_OUTAGES.labels(settings.name)
    await _wait_for_site_password(settings, "site-writer", up)
    kafka = topology.kafka
    consumer = AIOKafkaConsumer(
        kafka.topics.site_writes, **client_settings(kafka), enable_auto_commit=False, auto_offset_reset="earliest",
        group_id=site_writer_group(topology.streams.app_id, settings.name),
    )
    producer = producer_for(kafka)
    await producer.start()
    await consumer.start()
    store: SqlSiteStore | None = None
    try:
        watched = Outage(f"component=site-writer store={settings.name} kafka={kafka.bootstrap_servers}",
                         up=up, outages=outages)
        async with kafka_watched(consumer._client, watched, kafka.bootstrap_servers):
            store = await open_site_store_when_up(
                settings, Outage(f"component=site-writer store={settings.name}", up=up, outages=outages))
            runner = SiteSinkRunner(store, store=settings.name, consumer=consumer, producer=producer,
                                    topics=kafka.topics)
            await runner.run()
    finally:
        await consumer.stop()
        await producer.stop()
        if store is not None:
            await asyncio.to_thread(store.close)


def site_writer_groups(topology: Topology) -> list[str]:
    """The consumer groups of the site stores' writers (none without a sites section)."""
    stores = topology.sites.stores if topology.sites is not None else ()
    return [site_writer_group(topology.streams.app_id, store.name) for store in stores]
