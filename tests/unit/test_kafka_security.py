"""The kafka section's security keys, and the settings every Kafka client and the faust app get."""

import ssl
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from streams.config.security import KafkaSecurity, SaslSettings, Secret, TlsFiles
from streams.config.topology import parse_topology
from streams.kafka.clients import broker_credentials, client_settings
from tests.unit.test_topology import config, errors

SASL = {"mechanism": "SCRAM-SHA-256", "username": "idsync", "password_env": "IDSYNC_KAFKA_PASSWORD"}


def kafka(**security):
    return parse_topology(config(**{f"kafka.{key}": value for key, value in security.items()})).kafka


def test_plaintext_by_default():
    settings = kafka()
    assert settings.security == KafkaSecurity()
    assert client_settings(settings) == {"bootstrap_servers": "127.0.0.1:19092", "client_id": "idsync",
                                         "security_protocol": "PLAINTEXT"}
    assert broker_credentials(settings.security) is None


def test_sasl_ssl_with_scram_reads_the_password_from_its_variable_when_a_client_is_made(monkeypatch, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = kafka(security_protocol="SASL_SSL", sasl=SASL, tls={"ca_file": str(ca)})
    assert settings.security == KafkaSecurity(
        protocol="SASL_SSL", tls=TlsFiles(ca_file=ca),
        sasl=SaslSettings(mechanism="SCRAM-SHA-256", username="idsync", password=Secret(env="IDSYNC_KAFKA_PASSWORD")),
    )
    monkeypatch.setenv("IDSYNC_KAFKA_PASSWORD", "s3cret")
    monkeypatch.setattr("streams.kafka.clients.ssl_context", lambda files: ("context for", files))
    assert client_settings(settings) == {
        "bootstrap_servers": "127.0.0.1:19092", "client_id": "idsync", "security_protocol": "SASL_SSL",
        "ssl_context": ("context for", TlsFiles(ca_file=ca)),
        "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "idsync", "sasl_plain_password": "s3cret",
    }
    credentials = broker_credentials(settings.security)
    assert isinstance(credentials, SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value, credentials.username, credentials.password) == (
        "SASL_SSL", "SCRAM-SHA-256", "idsync", "s3cret")
    assert "s3cret" not in repr(credentials) and "s3cret" not in repr(settings)


def test_sasl_plaintext_and_ssl_give_faust_the_matching_credentials(monkeypatch):
    monkeypatch.setenv("IDSYNC_KAFKA_PASSWORD", "s3cret")
    plain = broker_credentials(kafka(security_protocol="SASL_PLAINTEXT", sasl=SASL | {"mechanism": "PLAIN"}).security)
    assert (plain.protocol.value, plain.mechanism.value, plain.ssl_context) == ("SASL_PLAINTEXT", "PLAIN", None)
    tls = broker_credentials(kafka(security_protocol="SSL").security)
    assert isinstance(tls, SSLCredentials) and tls.protocol.value == "SSL"
    assert (tls.context.verify_mode, tls.context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_bare_bootstrap_string_is_a_plaintext_cluster():
    assert client_settings("127.0.0.1:9092") == {"bootstrap_servers": "127.0.0.1:9092"}


@pytest.mark.parametrize(
    ("security", "messages"),
    [
        ({"security_protocol": "TLS"}, ["kafka.security_protocol: unknown value 'TLS'; known: PLAINTEXT, SSL, "
                                        "SASL_PLAINTEXT, SASL_SSL"]),
        ({"security_protocol": "SASL_SSL"}, ["kafka.sasl: required with security_protocol SASL_SSL: mechanism, "
                                             "username and password_env or password_file"]),
        ({"sasl": SASL}, ["kafka.sasl: unused with security_protocol PLAINTEXT; SASL needs SASL_SSL or "
                          "SASL_PLAINTEXT"]),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl": SASL, "tls": {"ca_file": "x"}},
         ["kafka.tls: unused with security_protocol SASL_PLAINTEXT; TLS needs SSL or SASL_SSL"]),
        ({"security_protocol": "SASL_SSL", "sasl": {"mechanism": "GSSAPI", "password": "x"}},
         ["kafka.sasl.password: passwords must not be written in the topology; use password_env (an environment "
          "variable) or password_file (a file)",
          "kafka.sasl.mechanism: unknown value 'GSSAPI'; known: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
          "kafka.sasl.username: required key is missing",
          "kafka.sasl: set exactly one of password_env or password_file"]),
        ({"security_protocol": "SSL", "tls": {"ca_file": "/nonexistent/ca.pem", "cert": "x"}},
         ["kafka.tls.cert: unknown key (did you mean cert_file?)",
          "kafka.tls.ca_file: no such file: '/nonexistent/ca.pem'"]),
    ],
)
def test_bad_kafka_security_is_reported_at_its_path(security, messages):
    assert errors(config(**{f"kafka.{key}": value for key, value in security.items()})) == messages


def test_the_sasl_password_file_is_relative_to_the_topology(tmp_path: Path):
    topology = parse_topology(
        config(**{"kafka.security_protocol": "SASL_PLAINTEXT",
                  "kafka.sasl": {"mechanism": "PLAIN", "username": "u", "password_file": "kafka.pw"}}),
        source=tmp_path / "topology.yaml",
    )
    assert topology.kafka.security.sasl.password == Secret(file=tmp_path / "kafka.pw")
