"""The worker's Prometheus endpoint, scraped over HTTP while a forest's slapd goes down and comes back."""

from __future__ import annotations

import asyncio
import secrets
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from idsync.rig import SlapdInstance
from idsync.rig.ports import free_port
from streams.config.topology import load_topology
from tests.conftest import Directories
from tests.integration.gal import GalDeployment, deploy, eventually
from tests.integration.test_gal_sync import SYNC_DEADLINE, contact_named, produce

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape_until(url: str, done: Callable[[Samples], bool], *, timeout: float, what: str) -> Samples:
    def probe() -> Samples | None:
        samples = scrape(url)
        return samples if done(samples) else None

    return eventually(probe, timeout=timeout, interval=0.2, what=what)


@pytest.fixture
def forest_a(tmp_path: Path) -> Iterator[SlapdInstance]:
    """Forest A on a slapd of its own: stopping the shared one would disturb whatever else holds it."""
    instance = SlapdInstance(
        tmp_path / "slapd", name="forest_a", suffix="dc=metrics-a,dc=idsync,dc=test",
        admin_password=secrets.token_urlsafe(16),
    ).start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def gal(kafka_broker, directories: Directories, forest_a: SlapdInstance, unique_name: str, tmp_path: Path):
    servers = {"central": directories.central, "forest_a": forest_a, "forest_b": directories.forest_b}
    deployment = deploy(tmp_path, unique_name, kafka_broker, servers)
    document = yaml.safe_load(deployment.topology.source.read_text())
    document["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
    deployment.topology.source.write_text(yaml.safe_dump(document, sort_keys=False))
    deployment.topology = load_topology(deployment.topology.source)
    try:
        yield deployment
    finally:
        deployment.stop_workers()


def test_metrics_show_a_forest_outage_and_the_flow_before_and_after(gal: GalDeployment, forest_a: SlapdInstance):
    settings = gal.topology.metrics
    url = f"http://{settings.host}:{settings.port}/metrics"
    app_id, topics = gal.topology.streams.app_id, gal.topology.kafka.topics
    gal.add_user("forest_a", "before.start")
    worker = gal.start_worker()
    eventually(lambda: contact_named(gal, "forest_a", "before.start"), timeout=60, what="first contact")

    gal.add_user("forest_a", "during.run")
    eventually(lambda: contact_named(gal, "forest_a", "during.run"), timeout=SYNC_DEADLINE, what="contact synced")
    asyncio.run(produce(gal.broker.bootstrap_servers, topics.changes, b"forest-a/garbage", b"{not json"))
    gal.wait_until_processed()
    before = scrape_until(
        url, lambda s: value(s, "idsync_dead_letters_total", stage="metaverse") == 1,
        timeout=SYNC_DEADLINE, what="dead letter counted",
    )
    assert value(before, "idsync_reader_up", forest="forest-a") == 1
    assert value(before, "idsync_reader_outages_total", forest="forest-a") == 0
    # The snapshot (before.start) and the add of during.run, at least: a poll may see a change twice.
    assert value(before, "idsync_reader_changes_published_total", forest="forest-a") >= 2
    assert value(before, "idsync_reader_position_saved_timestamp_seconds", forest="forest-a") > 0
    assert value(before, "idsync_reader_seconds_since_last_read", forest="forest-a") >= 0
    assert value(before, "idsync_sink_contacts_written_total") >= 2
    assert value(before, "idsync_sink_up") == 1
    assert value(before, "idsync_sink_errors_total", kind="unavailable") in (None, 0)
    for group, topic in ((app_id, topics.changes), (f"{app_id}-contact-writer", topics.contacts)):
        lags = [value(before, "idsync_consumer_lag", group=group, topic=topic, partition=str(p)) for p in range(3)]
        assert lags == [0, 0, 0], (group, lags)

    forest_a.stop()
    down = scrape_until(url, lambda s: value(s, "idsync_reader_up", forest="forest-a") == 0, timeout=30,
                        what="reader down")
    assert value(down, "idsync_reader_outages_total", forest="forest-a") == 1
    assert value(down, "idsync_reader_up", forest="forest-b") == 1
    idle = value(down, "idsync_reader_seconds_since_last_read", forest="forest-a")
    scrape_until(url, lambda s: value(s, "idsync_reader_seconds_since_last_read", forest="forest-a") > idle,
                 timeout=10, what="time since the last read growing")

    forest_a.start()
    gal.add_user("forest_a", "after.restart")
    eventually(lambda: contact_named(gal, "forest_a", "after.restart"), timeout=60, what="contact after restart")
    after = scrape(url)
    assert value(after, "idsync_reader_up", forest="forest-a") == 1
    assert value(after, "idsync_reader_outages_total", forest="forest-a") == 1
    assert value(after, "idsync_reader_changes_published_total", forest="forest-a") > value(
        before, "idsync_reader_changes_published_total", forest="forest-a"
    )
    assert value(after, "idsync_sink_contacts_written_total") > value(before, "idsync_sink_contacts_written_total")

    log = worker.log_path.read_text()
    assert log.count("outage started component=reader forest=forest-a") == 1, log[-3000:]
    assert log.count("outage ended component=reader forest=forest-a") == 1, log[-3000:]
