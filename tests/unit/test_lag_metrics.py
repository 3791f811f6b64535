"""idsync_consumer_lag is filled per scrape; unknown lag is left out, never shown stale."""

import logging
import secrets

from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY

from streams.monitoring.metrics import LagMetrics


class FakeProbe:
    def __init__(self) -> None:
        self.readings: dict[tuple[str, str], dict[int, int]] = {}
        self.down = False

    async def lag(self, group: str, topic: str) -> dict[int, int]:
        if self.down:
            raise KafkaConnectionError("broker gone")
        return self.readings[(group, topic)]


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
