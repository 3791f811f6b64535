"""Session-wide real servers for the integration tests: one Kafka broker and three OpenLDAP forests,
three more that speak TLS with certificates of the rig's test CA, and a PostgreSQL server.

A server that cannot start makes the tests that need it ERROR (RigError), never skip.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from idsync.rig import KafkaBroker, SlapdInstance
from idsync.rig.kafka import SaslSslListener
from idsync.rig.pki import TestCA
from idsync.rig.postgres import PostgresServer


class Directories(NamedTuple):
    """The rig's forests: idsync syncs contacts between the user forests and the central one."""

    central: SlapdInstance
    forest_a: SlapdInstance
    forest_b: SlapdInstance


FOREST_SUFFIXES = {
    "central": "dc=central,dc=idsync,dc=test",
    "forest_a": "dc=forest-a,dc=idsync,dc=test",
    "forest_b": "dc=forest-b,dc=idsync,dc=test",
}


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.start()
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def secure_kafka_broker(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[KafkaBroker]:
    """A broker with a SASL_SSL listener too: a certificate of the test CA for 127.0.0.1, and one
    user, `idsync`, whose SCRAM credentials Kafka's storage tool created (password in
    broker.sasl_ssl.users)."""
    listener = SaslSslListener(certificate=test_ca.issue("kafka", hosts=("127.0.0.1",)),
                               users={"idsync": secrets.token_urlsafe(16)})
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-sasl-ssl"), sasl_ssl=listener)
    try:
        yield broker.start()
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def directories(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directories]:
    workdir = tmp_path_factory.mktemp("slapd")
    instances = {
        name: SlapdInstance(workdir, name=name, suffix=suffix, admin_password=secrets.token_urlsafe(16))
        for name, suffix in FOREST_SUFFIXES.items()
    }
    try:
        for instance in instances.values():
            instance.start()
        yield Directories(**instances)
    finally:
        for instance in instances.values():
            instance.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the site stores: database and user `idsync` (server.conninfo)."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """The rig's certificate authority: the TLS servers' certificates are its."""
    return TestCA(tmp_path_factory.mktemp("pki")).create()


@pytest.fixture(scope="session")
def secure_directories(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[Directories]:
    """Forests with a certificate for 127.0.0.1 (not for localhost): StartTLS on their ldap:// port,
    and an ldaps:// port. They log every connection and operation (slapd's stats level)."""
    workdir = tmp_path_factory.mktemp("slapd-tls")
    instances = {
        name: SlapdInstance(workdir, name=name, suffix=suffix, admin_password=secrets.token_urlsafe(16),
                            tls=test_ca.issue(f"slapd-{name}", hosts=("127.0.0.1",)), log_level="stats")
        for name, suffix in FOREST_SUFFIXES.items()
    }
    try:
        for instance in instances.values():
            instance.start()
        yield Directories(**instances)
    finally:
        for instance in instances.values():
            instance.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A short name no other test uses, for topics, group ids and OUs: '<test name>-<random hex>'."""
    test_name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    test_name = test_name.removeprefix("test-")[:24].strip("-")
    return f"{test_name}-{secrets.token_hex(3)}"
