"""idsync_consumer_lag is filled per scrape; unknown lag is left out, never shown stale."""

import logging
import secrets

from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY

from streams.kafka.group_lag import GroupOffsets, PartitionOffsets
from streams.monitoring.metrics import LagMetrics


class FakeProbe:
    def __init__(self) -> None:
        self.readings: dict[tuple[str, str], dict[int, int]] = {}
        self.down = False

    async def lag(self, group: str, topic: str) -> dict[int, int]:
        if self.down:
            raise KafkaConnectionError("broker gone")
        return self.readings[(group, topic)]

    async def group_offsets(self, group: str, topics) -> GroupOffsets:
        if self.down:
            raise KafkaConnectionError("broker gone")
        # The oldest unconsumed record of partition p was written 10 * (p + 1) seconds before 1000.
        return GroupOffsets(group=group, at=1000.0, state="Stable", members=1, partitions=tuple(
            PartitionOffsets(topic=topic, partition=p, committed=0, log_start=0, log_end=lag,
                             oldest_unconsumed_ms=(1000 - 10 * (p + 1)) * 1000, owner=None)
            for topic in topics for p, lag in self.readings[(group, topic)].items()
        ))


def lag_of(group: str, topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(
        "idsync_consumer_lag", {"group": group, "topic": topic, "partition": str(partition)}
    )


async def test_each_refresh_replaces_the_lag_series():
    group, topic = f"g-{secrets.token_hex(3)}", f"t-{secrets.token_hex(3)}"
    probe = FakeProbe()
    metrics = LagMetrics(probe, [(group, topic)])

    probe.readings[(group, topic)] = {0: 5, 1: 0}
    await metrics.refresh()
    assert (lag_of(group, topic, 0), lag_of(group, topic, 1)) == (5, 0)

    probe.readings[(group, topic)] = {0: 2}
    await metrics.refresh()
    assert (lag_of(group, topic, 0), lag_of(group, topic, 1)) == (2, None)


async def test_unreadable_lag_is_left_out_and_logged_once(caplog):
    caplog.set_level(logging.INFO, logger="streams.monitoring.metrics")
    group, topic = f"g-{secrets.token_hex(3)}", f"t-{secrets.token_hex(3)}"
    probe = FakeProbe()
    probe.readings[(group, topic)] = {0: 7}
    metrics = LagMetrics(probe, [(group, topic)])
    await metrics.refresh()

    probe.down = True
    for _ in range(3):
        await metrics.refresh()
    assert lag_of(group, topic, 0) is None
    probe.down = False
    await metrics.refresh()
    assert lag_of(group, topic, 0) == 7
    assert [r.getMessage() for r in caplog.records if r.name == "streams.monitoring.metrics"] == [
        "consumer lag unreadable error='KafkaConnectionError: broker gone'",
        "consumer lag readable again",
    ]


async def test_lag_in_seconds_per_group_is_the_age_of_its_oldest_unconsumed_record():
    group, topic = f"g-{secrets.token_hex(3)}", f"t-{secrets.token_hex(3)}"
    probe = FakeProbe()
    probe.readings[(group, topic)] = {0: 3, 1: 4}
    metrics = LagMetrics(probe, [(group, topic)])
    await metrics.refresh()
    assert REGISTRY.get_sample_value("idsync_consumer_lag_seconds", {"group": group}) == 20.0
    assert metrics.history.samples()[group] == [(1000.0, 7, 20.0)]
    probe.readings[(group, topic)] = {0: 0, 1: 0}
    await metrics.refresh()
    assert REGISTRY.get_sample_value("idsync_consumer_lag_seconds", {"group": group}) == 0.0
