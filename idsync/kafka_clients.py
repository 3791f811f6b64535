"""The Kafka clients idsync's components and commands open: the keyword arguments of every
aiokafka client, the producer every component publishes with, and the watch that reports
whether a client reaches Kafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient

from streams.config.topology import KafkaSettings
from streams.kafka.clients import client_settings
from streams.kafka.watch import watch_kafka
from streams.monitoring.client_logs import quiet_kafka_clients
from streams.monitoring.outages import Outage


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Bootstrap servers, client id and the security settings (TLS, SASL): what every idsync client
    gets (streams/kafka/clients.py). The one place where these commands' Kafka connections are
    configured."""
    return client_settings(kafka)


# aiokafka queues one record batch per partition and waits for it to go out before taking the
# next, so a backlog moves one batch per partition per produce request: at the default 16 KiB,
# about 45 changes. Half of the broker's default message.max.bytes (1 MiB) leaves room for a
# batch's overhead; a larger record still travels alone.
PRODUCER_BATCH_BYTES = 512 * 1024


def producer_for(kafka: KafkaSettings) -> AIOKafkaProducer:
    """The producer every idsync component publishes with: acknowledged by all in-sync replicas,
    idempotent (a retried send is never written twice), in record batches of up to
    PRODUCER_BATCH_BYTES."""
    return AIOKafkaProducer(
        **client_settings(kafka),
        acks="all",
        enable_idempotence=True,
        max_batch_size=PRODUCER_BATCH_BYTES,
    )


@contextlib.asynccontextmanager
async def kafka_watched(client: AIOKafkaClient, outage: Outage, servers: str) -> AsyncIterator[None]:
    """While the block runs, whether `client` reaches Kafka is reported to `outage`, and
    aiokafka's own connection errors are cut to one line of each kind a minute."""
    quiet_kafka_clients()
    watcher = asyncio.create_task(watch_kafka(client, outage, servers))
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
