"""Start-up: a missing secret is waited for, named by its YAML path; Kafka is waited for when it
cannot be reached, and not when it refuses idsync or its password cannot be read."""

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY, Gauge

from idsync import runtime
from streams.config.security import Secret
from streams.kafka.clients import KafkaAccessError
from streams.monitoring.secrets import wait_for_secret
from tests.unit.test_kafka_security import SASL, kafka

UP = Gauge("test_startup_up", "up gauge of the start-up tests")


async def test_a_missing_secret_is_waited_for_logged_once_a_minute_with_its_yaml_path(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="streams.monitoring.secrets")
    file = tmp_path / "password"
    secret = Secret(file=file, key="forests[1].password_file")
    now = [0.0]
    waiting = asyncio.create_task(wait_for_secret(secret, "component=reader forest=a", waits="the reader waits",
                                                  up=UP, check_seconds=0.01, log_seconds=60, clock=lambda: now[0]))
    await asyncio.sleep(0.1)
    assert not waiting.done() and REGISTRY.get_sample_value("test_startup_up") == 0
    now[0] = 61
    await asyncio.sleep(0.05)
    file.write_text("s3cret\n")
    await asyncio.wait_for(waiting, 1)

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("forests[1].password_file: cannot read password file" in e for e in errors)
    assert errors[0].startswith("secret unavailable component=reader forest=a ")
    assert caplog.records[-1].getMessage() == "secret available component=reader forest=a"
    assert "s3cret" not in caplog.text


async def test_an_unreadable_kafka_password_ends_the_start_with_one_line_naming_its_key(monkeypatch):
    monkeypatch.delenv("IDSYNC_KAFKA_PASSWORD", raising=False)
    settings = kafka(security_protocol="SASL_PLAINTEXT", sasl=SASL)
    with pytest.raises(SystemExit, match=r"^idsync: kafka\.sasl\.password_env: environment variable "
                                         r"IDSYNC_KAFKA_PASSWORD is not set$"):
        await runtime.require_kafka_access(settings, wait=True)


async def test_kafka_unreachable_is_waited_for_and_a_refusal_is_not(monkeypatch, caplog):
    answers = [KafkaAccessError("cannot connect to Kafka (PLAINTEXT): a:1: refused", refused=False)] * 2 + [None]

    async def check(_kafka):
        if (answer := answers.pop(0)) is not None:
            raise answer

    async def no_sleep(_seconds):
        pass

    monkeypatch.setattr(runtime, "check_access", check)
    caplog.set_level(logging.INFO, logger="idsync.runtime")
    await runtime.require_kafka_access(kafka(), wait=True, sleep=no_sleep)
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING", "INFO"]
    assert "kafka unreachable, waiting for it" in caplog.records[0].getMessage()

    answers[:] = [KafkaAccessError("cannot connect to Kafka (PLAINTEXT): a:1: refused", refused=False)]
    with pytest.raises(SystemExit):
        await runtime.require_kafka_access(kafka())  # idsync import does not wait
    answers[:] = [KafkaAccessError("cannot connect to Kafka: a:1: [Error 58] SaslAuthenticationFailed", refused=True)]
    with pytest.raises(SystemExit, match="SaslAuthenticationFailed"):
        await runtime.require_kafka_access(kafka(), wait=True, sleep=no_sleep)


def test_idsync_import_names_a_missing_forest_password_by_its_key_and_publishes_nothing(tmp_path, monkeypatch, capsys):
    from idsync import cli
    from tests.unit.test_topology import REPO_TOPOLOGY

    path = tmp_path / "topology.yaml"
    path.write_text(REPO_TOPOLOGY.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.delenv("IDSYNC_FOREST_A_PASSWORD", raising=False)
    monkeypatch.setattr("idsync.runtime.run_full_import", lambda *a, **k: pytest.fail("nothing may be published"))

    assert cli.main(["import", "--full", "--forest", "forest-a", "--topology", str(path)]) == 1
    assert capsys.readouterr().err == (
        "idsync: forests[1].password_env: environment variable IDSYNC_FOREST_A_PASSWORD is not set\n")


async def test_the_metrics_endpoints_missing_password_is_said_at_start_with_its_key(monkeypatch, caplog):
    from streams.config.topology import parse_topology
    from tests.unit.test_topology import config

    class Probe:
        def __init__(self, _kafka):
            pass

        async def start(self):
            pass

        async def stop(self):
            pass

    async def serve(_settings, _lag, **_):
        pass

    monkeypatch.delenv("IDSYNC_METRICS_PASSWORD", raising=False)
    monkeypatch.setattr(runtime, "LagProbe", Probe)
    monkeypatch.setattr(runtime, "serve_metrics", serve)
    topology = parse_topology(config(metrics={"auth": {"username": "prometheus",
                                                       "password_env": "IDSYNC_METRICS_PASSWORD"}}))
    await runtime.run_metrics_endpoint(topology)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "secret unavailable component=metrics error='metrics.auth.password_env: environment variable "
        "IDSYNC_METRICS_PASSWORD is not set': every scrape is refused until it can be read"]


def test_every_missing_forest_password_is_reported_before_anything_starts(monkeypatch, caplog):
    from tests.unit.test_topology import REPO_TOPOLOGY

    from streams.config.topology import load_topology

    monkeypatch.delenv("IDSYNC_CENTRAL_PASSWORD", raising=False)
    monkeypatch.delenv("IDSYNC_FOREST_A_PASSWORD", raising=False)
    monkeypatch.setenv("IDSYNC_FOREST_B_PASSWORD", "s3cret")
    runtime.report_missing_secrets(load_topology(REPO_TOPOLOGY))
    assert [r.getMessage() for r in caplog.records] == [
        "secret unavailable forest=central error='forests[0].password_env: environment variable "
        "IDSYNC_CENTRAL_PASSWORD is not set': its reader and the contact writer will wait for it, "
        "the other forests sync",
        "secret unavailable forest=forest-a error='forests[1].password_env: environment variable "
        "IDSYNC_FOREST_A_PASSWORD is not set': its reader will wait for it, the other forests sync",
    ]
