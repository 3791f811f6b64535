"""The whole pipeline against Kafka's SASL_SSL listener (SCRAM, a certificate of the rig's test CA),
with the forests over verified TLS too; wrong Kafka credentials end the worker with one line."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest

from idsync.rig import KafkaBroker
from idsync.rig.ports import free_port
from streams.config.metaverse import engine_settings
from streams.kafka.compacted import latest_values
from tests.integration.gal import GalDeployment, deploy, eventually
from tests.integration.test_ldap_tls import contact, verified

pytestmark = pytest.mark.integration


def sasl_ssl(broker: KafkaBroker, password_file: Path, ca_file: Path, *, mechanism: str) -> dict[str, object]:
    return {
        "bootstrap_servers": broker.sasl_ssl_bootstrap_servers,
        "security_protocol": "SASL_SSL",
        "sasl": {"mechanism": mechanism, "username": "idsync", "password_file": str(password_file)},
        "tls": {"ca_file": str(ca_file)},
    }


@pytest.fixture
def deployments():
    made: list[GalDeployment] = []
    yield made
    for deployment in made:
        deployment.stop_workers()


def test_the_whole_pipeline_runs_over_sasl_ssl_with_scram(
    deployments, secure_kafka_broker, secure_directories, test_ca, unique_name, tmp_path
) -> None:
    password = secure_kafka_broker.sasl_ssl.users["idsync"]
    (secret := tmp_path / "kafka-password").write_text(password + "\n")
    metrics_port = free_port()
    gal = deploy(tmp_path, unique_name, secure_kafka_broker, secure_directories._asdict(),
                 forest_settings=verified(secure_directories, test_ca),
                 kafka_settings=sasl_ssl(secure_kafka_broker, secret, test_ca.cert, mechanism="SCRAM-SHA-512"),
                 metrics={"listen": f"127.0.0.1:{metrics_port}"})
    deployments.append(gal)
    ada = gal.add_user("forest_a", "ada", displayName="Ada", mail="ada@a.test")
    gal.start_worker()
    eventually(lambda: contact(gal, "forest_a", "ada"), timeout=60, what="a contact through SASL_SSL")

    bob = gal.add_user("forest_b", "bob", displayName="Bob", mail="bob@b.test")
    eventually(lambda: contact(gal, "forest_b", "bob"), timeout=5, what="a change through SASL_SSL")
    gal.modify("forest_a", ada, displayName="Ada L.")
    gal.delete("forest_b", bob)
    eventually(lambda: (contact(gal, "forest_a", "ada") or {}).get("displayname") == ["Ada L."]
               and contact(gal, "forest_b", "bob") is None, timeout=5, what="update and delete")
    # The operator commands and the lag probe connect the same way (idsync conflicts reads
    # the conflicts topic; wait_until_processed reads the groups' lag).
    gal.wait_until_processed()
    assert "no open conflicts" in gal.idsync("conflicts").lower()

    # Nothing the worker logged or published holds a secret.
    log = gal.workers[-1].log_path.read_text(errors="replace")
    secrets = [password, *(d.admin_password for d in secure_directories)]
    assert not [s for s in secrets if s in log] and "PRIVATE KEY" not in log and "Traceback" not in log
    topics = engine_settings(gal.topology).topics
    for topic in {*topics.consumed(), topics.contacts, topics.conflicts, topics.errors, topics.held_deletes,
                  gal.topology.kafka.topics.positions}:
        values = asyncio.run(latest_values(gal.topology.kafka, topic))
        assert not [s for s in secrets if any(s.encode() in (value or b"") for value in values.values())], topic
    # Nor does anything the metrics endpoint serves.
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        served = response.read().decode()
    assert "idsync_reader_up" in served
    assert not [s for s in secrets if s in served] and "PRIVATE KEY" not in served
    # The plaintext listener of the same broker saw the topics too: the SASL_SSL listener is the same cluster.
    assert asyncio.run(latest_values(secure_kafka_broker.bootstrap_servers, gal.topology.kafka.topics.contacts))


def test_wrong_kafka_credentials_end_the_worker_with_one_clear_line(
    deployments, secure_kafka_broker, directories, test_ca, unique_name, tmp_path
) -> None:
    (secret := tmp_path / "kafka-password").write_text("not-the-password\n")
    gal = deploy(tmp_path, unique_name, secure_kafka_broker, directories._asdict(),
                 kafka_settings=sasl_ssl(secure_kafka_broker, secret, test_ca.cert, mechanism="SCRAM-SHA-256"))
    deployments.append(gal)
    worker = gal.start_worker()
    eventually(lambda: not worker.running, timeout=60, what="the worker gives up")

    assert worker.returncode == 1
    lines = [line for line in worker.log_path.read_text(errors="replace").splitlines() if line.strip()]
    assert lines == [
        f"idsync: cannot connect to Kafka (SASL_SSL, SASL SCRAM-SHA-256 as idsync): "
        f"{secure_kafka_broker.sasl_ssl_bootstrap_servers}: [Error 58] SaslAuthenticationFailed: Authentication "
        "failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256"
    ]
