"""/healthz answers while the process lives, without auth; /readyz only when every component is up."""

import asyncio

import aiohttp

from idsync.rig.ports import free_port
from streams.config.security import MetricsAuth, Secret
from streams.config.topology import MetricsSettings
from streams.monitoring import metrics
from tests.unit.test_metrics_auth import NoLag, basic, serving, stop


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as response:
        return response.status, await response.text()


class Unreachable(NoLag):
    kafka_reachable = False


def test_components_down_names_each_component_not_up():
    metrics.READER_UP.labels("health-a").set(1)
    metrics.READER_UP.labels("health-b").set(0)
    metrics.SINK_UP.set(1)
    try:
        assert metrics.components_down(kafka_reachable=True) == ["reader forest=health-b"]
        metrics.SINK_UP.set(0)
        assert metrics.components_down(kafka_reachable=False) == ["reader forest=health-b", "contact-writer", "kafka"]
    finally:
        metrics.READER_UP.remove("health-a")
        metrics.READER_UP.remove("health-b")


async def test_healthz_needs_no_auth_and_readyz_does(tmp_path):
    (tmp_path / "token").write_text("t0ken\n")
    auth = MetricsAuth(username=None, secret=Secret(file=tmp_path / "token"))
    task, url = await serving(MetricsSettings(host="127.0.0.1", port=free_port(), auth=auth))
    base = url.removesuffix("/metrics")
    metrics.SINK_UP.set(1)
    try:
        assert await get(base + "/healthz") == (200, "ok\n")
        assert (await get(base + "/readyz"))[0] == 401
        assert (await get(base + "/readyz", basic("x", "y")))[0] == 401
        assert await get(base + "/readyz", {"Authorization": "Bearer t0ken"}) == (200, "ready\n")
        metrics.SINK_UP.set(0)
        assert await get(base + "/readyz", {"Authorization": "Bearer t0ken"}) == (503, "down contact-writer\n")
    finally:
        await stop(task)


async def test_readyz_says_kafka_is_down_when_the_lag_cannot_be_read():
    settings = MetricsSettings(host="127.0.0.1", port=free_port())
    task = asyncio.create_task(metrics.serve_metrics(settings, Unreachable()))
    metrics.SINK_UP.set(1)
    try:
        for _ in range(100):
            try:
                status = await get(f"http://127.0.0.1:{settings.port}/readyz")
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)
        assert status == (503, "down kafka\n")
    finally:
        await stop(task)
