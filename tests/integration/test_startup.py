"""Start-up as an operator sees it: a forest whose secret is missing waits, named by its YAML path,
while the other forests sync; a Kafka that is not there yet is waited for."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import pytest

from idsync.rig import KafkaBroker
from idsync.rig.ports import free_port
from tests.integration.gal import GalDeployment, deploy, eventually
from tests.integration.test_ldap_tls import contact, worker_log

pytestmark = pytest.mark.integration


@pytest.fixture
def deployments() -> Iterator[list[GalDeployment]]:
    made: list[GalDeployment] = []
    yield made
    for deployment in made:
        deployment.stop_workers()


def test_a_forest_whose_password_file_is_missing_waits_for_it_while_the_others_sync(
    deployments, kafka_broker, directories, unique_name, tmp_path
) -> None:
    secret = tmp_path / "secrets" / "forest-a-password"  # mounted later
    gal = deploy(tmp_path, unique_name, kafka_broker, directories._asdict(),
                 forest_settings={"forest_a": {"password_env": None, "password_file": str(secret)}})
    deployments.append(gal)
    gal.add_user("forest_a", "ada", displayName="Ada", mail="ada@a.test")
    gal.add_user("forest_b", "bob", displayName="Bob", mail="bob@b.test")
    worker = gal.start_worker()

    eventually(lambda: contact(gal, "forest_b", "bob"), timeout=60, what="forest B's contact")
    assert worker.running
    log = worker_log(gal)
    waiting = [line for line in log.splitlines() if "forests[1].password_file" in line]
    assert waiting and all("ERROR" in line and "forest=forest-a" in line for line in waiting), log[-3000:]
    assert "Traceback" not in log and "component failed" not in log
    assert contact(gal, "forest_a", "ada") is None

    secret.parent.mkdir()
    secret.write_text(directories.forest_a.admin_password + "\n")
    eventually(lambda: contact(gal, "forest_a", "ada"), timeout=30, what="forest A's contact once its secret is there")
    assert "secret available component=reader forest=forest-a" in worker_log(gal)
    assert "Traceback" not in worker_log(gal)


def test_the_central_forests_missing_password_holds_its_reader_and_the_contact_writer_until_it_comes(
    deployments, kafka_broker, directories, unique_name, tmp_path
) -> None:
    secret = tmp_path / "secrets" / "central-password"
    gal = deploy(tmp_path, unique_name, kafka_broker, directories._asdict(),
                 forest_settings={"central": {"password_env": None, "password_file": str(secret)}})
    deployments.append(gal)
    gal.add_user("forest_a", "ada", displayName="Ada", mail="ada@a.test")
    worker = gal.start_worker()

    def waiting() -> list[str]:
        return [line for line in worker_log(gal).splitlines() if "forests[0].password_file" in line]

    def components_waiting() -> set[str]:
        return {c for line in waiting() for c in ("component=reader forest=central", "component=contact-writer")
                if c in line}

    # The writer retries on its own clock and may log twice before the reader's first line: wait for both.
    eventually(lambda: components_waiting() == {"component=reader forest=central", "component=contact-writer"},
               timeout=60, what="the central reader's and the writer's lines")
    assert all("[ERROR] secret unavailable" in line for line in waiting())
    eventually(lambda: "snapshot published forest=forest-a" in worker_log(gal), timeout=30, what="forest A published")
    assert worker.running and contact(gal, "forest_a", "ada") is None

    secret.parent.mkdir()
    secret.write_text(directories.central.admin_password)
    eventually(lambda: contact(gal, "forest_a", "ada"), timeout=30, what="the contact once the central secret is there")
    assert "Traceback" not in worker_log(gal)


def test_a_kafka_that_cannot_be_reached_at_start_is_waited_for(deployments, directories, unique_name, tmp_path) -> None:
    broker = KafkaBroker(tmp_path / "kafka", port=free_port())  # nobody listens there yet
    gal = deploy(tmp_path, unique_name, broker, directories._asdict())
    deployments.append(gal)
    gal.add_user("forest_a", "ada", displayName="Ada", mail="ada@a.test")
    worker = gal.start_worker()
    try:
        eventually(lambda: "kafka unreachable, waiting for it" in worker_log(gal), timeout=30, what="the wait's line")
        time.sleep(3)
        assert worker.running, worker_log(gal)
        broker.start()
        eventually(lambda: contact(gal, "forest_a", "ada"), timeout=90, what="a contact once Kafka is there")
        log = worker_log(gal)
        waits = [line for line in log.splitlines() if "kafka unreachable" in line]
        assert all("WARNING" in line and f"127.0.0.1:{broker.port}" in line for line in waits), waits
        assert "kafka reachable after" in log and "Traceback" not in log
    finally:
        gal.stop_workers()
        broker.stop()


def scrape(port: int) -> dict[str, float]:
    """The idsync_*_up samples the worker's metrics endpoint serves, by their text form."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        lines = response.read().decode().splitlines()
    return {name: float(value) for name, _, value in (line.rpartition(" ") for line in lines)
            if name.startswith(("idsync_reader_up", "idsync_sink_up"))}


def test_a_kafka_outage_mid_stream_is_one_started_and_one_ended_line_per_component_with_up_at_0(
    deployments, directories, unique_name, tmp_path
) -> None:
    broker = KafkaBroker(tmp_path / "kafka").start()
    metrics_port = free_port()
    gal = deploy(tmp_path, unique_name, broker, directories._asdict(), metrics={"listen": f"127.0.0.1:{metrics_port}"})
    deployments.append(gal)
    gal.add_user("forest_a", "ada", displayName="Ada", mail="ada@a.test")
    worker = gal.start_worker()
    try:
        eventually(lambda: contact(gal, "forest_a", "ada"), timeout=60, what="a contact before the outage")
        up = {'idsync_reader_up{forest="central"}', 'idsync_reader_up{forest="forest-a"}',
              'idsync_reader_up{forest="forest-b"}', "idsync_sink_up"}
        assert scrape(metrics_port).keys() >= up and set(scrape(metrics_port).values()) == {1.0}
        before = len(worker_log(gal).splitlines())

        broker.stop()
        down = eventually(lambda: (samples := scrape(metrics_port)) and all(samples[name] == 0 for name in up)
                          and samples, timeout=15, what="every up gauge at 0")
        time.sleep(10)
        assert all(scrape(metrics_port)[name] == 0 for name in up), down
        broker.start()
        gal.add_user("forest_b", "bob", displayName="Bob", mail="bob@b.test")
        eventually(lambda: contact(gal, "forest_b", "bob"), timeout=90, what="a contact after the outage")
        eventually(lambda: all(scrape(metrics_port)[name] == 1 for name in up), timeout=15, what="up again")
        assert worker.running

        lines = worker_log(gal).splitlines()[before:]
        started = [line for line in lines if "outage started" in line]
        ended = [line for line in lines if "outage ended" in line]
        components = ("component=reader forest=central ", "component=reader forest=forest-a ",
                      "component=reader forest=forest-b ", "component=contact-writer ")
        assert sorted(c for line in started for c in components if c in line) == sorted(components), started
        assert sorted(c for line in ended for c in components if c in line) == sorted(components), ended
        noisy = [line for line in lines if "[ERROR]" in line or "[WARNING]" in line]
        assert len(noisy) < 60, f"{len(noisy)} lines, e.g. {noisy[:40]}"
        assert "Traceback" not in "\n".join(lines)
    finally:
        gal.stop_workers()
        broker.stop()
