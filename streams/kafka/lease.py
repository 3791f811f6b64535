"""A lease through Kafka itself: one holder among the workers of a deployment.

Each reader of a forest (and of a site store) must run exactly once however many workers run,
or every worker would read and publish the same changes. The workers that may run it join one
consumer group (one group per reader) on a single-partition topic; Kafka's group coordinator
assigns that partition to exactly one member, and the member holding it runs the reader. When
the holder stops, or dies and misses its heartbeats for the session timeout, the group
rebalances and another member takes the partition, and the reader with it. A member that joins
or leaves leaves the lease where it is (streams/kafka/lease_assignor.py).

aiokafka runs the rebalance callbacks before the group re-forms and every member's revocation
before any member's assignment, so on a clean hand-over the old holder has stopped its reader
before the new one starts it. A holder that was cut off (frozen, or its network gone) may run a
moment longer than its lease; readers publish idempotent events and save positions only after
Kafka acknowledged them, so an overlap publishes some changes twice and loses none.

Nothing is ever written to the lease topic: it exists so that a group has a partition to assign.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from streams.kafka.clients import Brokers, client_settings
from streams.kafka.lease_assignor import KeepHolderAssignor

log = logging.getLogger(__name__)

def lease_topic(app_id: str) -> str:
    """The one-partition topic every lease group of a deployment assigns (streams.kafka.topics)."""
    return f"{app_id}-leases"


def lease_group(app_id: str, lease: str) -> str:
    return f"{app_id}-lease-{lease}"


# How often the holder checks on its work and lets the consumer poll (a member that does not poll
# within max.poll.interval.ms leaves its group).
_POLL_MS = 1000


class _Holder(ConsumerRebalanceListener):
    def __init__(self, lease: str, topic: str, work: Callable[[], Awaitable[None]]) -> None:
        self._lease = lease
        self._partition = TopicPartition(topic, 0)
        self._work = work
        self.task: asyncio.Task | None = None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if self._partition in assigned and self.task is None:
            log.info("lease acquired lease=%s: running it here", self._lease)
            self.task = asyncio.create_task(self._work(), name=f"lease-{self._lease}")

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self._partition in revoked and self.task is not None:
            await self.stop()
            log.info("lease released lease=%s: another worker may take it", self._lease)

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_while_held(kafka: Brokers, *, topic: str, group: str, lease: str, session_timeout_seconds: float,
                         work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` whenever this member holds the lease, for as long as it does; forever. An
    exception of `work` ends this call with it (the component failed)."""
    holder = _Holder(lease, topic, work)
    session_ms = int(session_timeout_seconds * 1000)
    consumer = AIOKafkaConsumer(
        **client_settings(kafka), group_id=group, enable_auto_commit=False,
        session_timeout_ms=session_ms, heartbeat_interval_ms=max(session_ms // 5, 100),
        # Round robin, aiokafka's default, only while a worker of an older idsync is in the group
        # (a rolling upgrade): Kafka picks a strategy that every member offers.
        partition_assignment_strategy=(KeepHolderAssignor(), RoundRobinPartitionAssignor),
    )
    consumer.subscribe([topic], listener=holder)
    await consumer.start()
    try:
        while True:
            await consumer.getmany(timeout_ms=_POLL_MS)
            task = holder.task
            if task is not None and task.done():
                holder.task = None
                task.result()  # the work's exception, if it failed
                log.warning("lease work ended on its own lease=%s: started again", lease)
                await holder.on_partitions_assigned(list(consumer.assignment()))
    finally:
        await holder.stop()
        await consumer.stop()
