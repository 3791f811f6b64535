"""Start-up as an operator sees it: a forest whose secret is missing waits, named by its YAML path,
while the other forests sync; a Kafka that is not there yet is waited for."""

from __future__ import annotations

import time
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
