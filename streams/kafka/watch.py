"""Noticing that a component's Kafka went away, and when it is back.

aiokafka retries a broker that went away by itself, and only says so in its log: a producer's
send waits in its buffer and a consumer's fetch finds nothing, so a runner alone would see no
failure. `watch_kafka` asks the component's own client every second whether it can reach a
broker, and reports the answer to an Outage of that component: one "outage started" line when
none can be reached, one "outage ended" when one can again, the component's `up` gauge at 0 in
between.
"""

from __future__ import annotations

import asyncio

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError

from streams.monitoring.outages import Outage

WATCH_INTERVAL_SECONDS = 1.0


async def reachable(client: AIOKafkaClient) -> bool | None:
    """Whether a broker of the cluster accepts a connection; None before the client knows any."""
    brokers = client.cluster.brokers()
    if not brokers:
        return None
    for broker in brokers:
        if await client.ready(broker.nodeId):
            return True
    return False


async def watch_kafka(client: AIOKafkaClient, outage: Outage, servers: str, *,
                      interval: float = WATCH_INTERVAL_SECONDS) -> None:
    """Until cancelled: report whether `client` reaches Kafka to `outage`."""
    while True:
        answer = await reachable(client)
        if answer is False:
            outage.failed(KafkaConnectionError(f"no broker of {servers} can be reached"))
        elif answer and outage.ongoing:
            outage.succeeded()
        await asyncio.sleep(interval)
