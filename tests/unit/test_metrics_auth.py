"""Who may read the metrics endpoint: the metrics.auth key, and the endpoint serving on a local port."""

import asyncio
import base64
import logging
from pathlib import Path

import aiohttp
import pytest

from idsync.rig.ports import free_port
from streams.config.security import MetricsAuth, Secret
from streams.config.topology import MetricsSettings, parse_topology
from streams.monitoring import metrics
from tests.unit.test_topology import config, errors


def test_basic_auth_and_bearer_token_files_relative_to_the_topology(tmp_path: Path):
    basic = parse_topology(config(metrics={"auth": {"username": "prometheus", "password_file": "metrics.pw"}}),
                           source=tmp_path / "topology.yaml").metrics
    assert basic.auth == MetricsAuth(username="prometheus", secret=Secret(file=tmp_path / "metrics.pw"))
    bearer = parse_topology(config(metrics={"listen": "0.0.0.0:9464", "auth": {"bearer_token_file": "/run/token"}}))
    assert bearer.metrics == MetricsSettings(host="0.0.0.0", port=9464,
                                             auth=MetricsAuth(username=None, secret=Secret(file=Path("/run/token"))))
    assert bearer.metrics.auth.scheme == "Bearer" and basic.auth.scheme == "Basic"


@pytest.mark.parametrize(
    ("auth", "messages"),
    [
        ({}, ["metrics.auth: set username with password_env or password_file (basic auth), or bearer_token_file"]),
        ({"username": "p"}, ["metrics.auth: set exactly one of password_env or password_file"]),
        ({"username": "a:b", "password_env": "X"},
         ["metrics.auth.username: must not be empty or contain ':' (HTTP basic auth)"]),
        ({"bearer_token_file": "t", "username": "p"}, ["metrics.auth.username: basic auth or a bearer token, not both"]),
        ({"token": "abc"}, ["metrics.auth.token: unknown key",
                            "metrics.auth: set username with password_env or password_file (basic auth), or "
                            "bearer_token_file"]),
        ({"username": "p", "password": "x"}, [
            "metrics.auth.password: passwords must not be written in the topology; use password_env (an environment "
            "variable) or password_file (a file)",
            "metrics.auth: set exactly one of password_env or password_file"]),
    ],
)
def test_bad_metrics_auth_is_reported_at_its_path(auth, messages):
    assert errors(config(metrics={"auth": auth})) == messages


class NoLag:
    kafka_reachable = True

    async def refresh(self) -> None: ...


async def serving(settings: MetricsSettings):
    task = asyncio.create_task(metrics.serve_metrics(settings, NoLag()))
    url = f"http://{settings.host}:{settings.port}/metrics"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(url):
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)
    return task, url


async def status(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as response:
        return response.status, response.headers.get("WWW-Authenticate", "")


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_without_auth_the_endpoint_answers_on_this_machine():
    task, url = await serving(MetricsSettings(host="127.0.0.1", port=free_port()))
    try:
        assert await status(url) == (200, "")
    finally:
        await stop(task)


async def test_basic_auth_lets_only_the_right_password_in_and_reads_it_at_each_scrape(tmp_path: Path):
    password = tmp_path / "metrics.pw"
    password.write_text("old-secret\n")
    auth = MetricsAuth(username="prometheus", secret=Secret(file=password))
    task, url = await serving(MetricsSettings(host="127.0.0.1", port=free_port(), auth=auth))
    try:
        assert await status(url) == (401, 'Basic realm="idsync metrics"')
        assert (await status(url, basic("prometheus", "wrong")))[0] == 401
        assert (await status(url, basic("someone", "old-secret")))[0] == 401
        assert (await status(url, {"Authorization": "Basic not-base64!"}))[0] == 401
        assert (await status(url, basic("prometheus", "old-secret")))[0] == 200
        password.write_text("new-secret\n")  # rotated: applies at once
        assert (await status(url, basic("prometheus", "old-secret")))[0] == 401
        assert (await status(url, basic("prometheus", "new-secret")))[0] == 200
    finally:
        await stop(task)


async def test_a_bearer_token_from_a_file(tmp_path: Path, caplog):
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    auth = MetricsAuth(username=None, secret=Secret(file=token))
    task, url = await serving(MetricsSettings(host="127.0.0.1", port=free_port(), auth=auth))
    try:
        assert await status(url, {"Authorization": "Bearer t0ken"}) == (200, "")
        assert await status(url, {"Authorization": "Bearer t0ke"}) == (401, 'Bearer realm="idsync metrics"')
        assert (await status(url, basic("t0ken", "t0ken")))[0] == 401
        token.unlink()  # unreadable: every scrape refused, and the log says why
        with caplog.at_level(logging.ERROR, logger=metrics.__name__):
            assert (await status(url, {"Authorization": "Bearer t0ken"}))[0] == 401
        assert any("metrics credentials unreadable" in r.getMessage() for r in caplog.records)
    finally:
        await stop(task)


async def test_an_endpoint_open_to_the_network_without_auth_is_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger=metrics.__name__):
        task, _ = await serving(MetricsSettings(host="0.0.0.0", port=free_port()))
        await stop(task)
    assert any("metrics endpoint open to the network without authentication" in r.getMessage()
               for r in caplog.records)
