"""A PostgreSQL site store's `tls` key: verified TLS by default, a store on this machine without
one requires nothing, every mistake reported with its YAML path; and the libpq parameters each
setting becomes. (With a real TLS server: tests/integration/test_site_store_tls.py.)"""

from pathlib import Path

import pytest

from connectors.sites.engines import libpq_tls, system_ca_file, tls_refusal
from streams.config.security import PostgresTls, TlsFiles, local_postgres
from streams.config.topology import parse_topology
from streams.contracts import NeedsAttention
from tests.unit.test_topology_sites import config, errors


def store(url: str, **keys) -> dict:
    return {"stores": [{"name": "pg", "url": url, "password_env": "PG", **keys}]}


def tls_of(url: str, source: Path | None = None, **keys) -> PostgresTls:
    return parse_topology(config(store(url, **keys)), source=source).sites.stores[0].tls


def test_a_remote_store_verifies_its_server_by_default():
    tls = tls_of("postgresql://idsync@db.example:5432/sites")
    assert tls == PostgresTls(required=True, verify=True, files=TlsFiles(), min_version="1.2")
    assert libpq_tls(tls) == {"sslmode": "verify-full", "sslrootcert": system_ca_file(),
                              "ssl_min_protocol_version": "TLSv1.2"}


@pytest.mark.parametrize("url", [
    "postgresql://idsync@127.0.0.1:5432/sites", "postgresql://idsync@127.0.0.9/sites",
    "postgresql://idsync@localhost/sites", "postgresql://idsync@[::1]:5432/sites",
    "postgresql:///sites", "postgresql://idsync@%2Fvar%2Frun%2Fpostgresql/sites",
    "postgresql://idsync@/sites?host=/var/run/postgresql",
])
def test_a_store_on_this_machine_without_a_tls_key_requires_nothing(url):
    assert local_postgres(url)
    tls = tls_of(url)
    assert not tls.required and libpq_tls(tls) == {"sslmode": "prefer"}


@pytest.mark.parametrize("url", [
    "postgresql://idsync@db:5432/sites", "postgresql://idsync@10.0.0.5/sites",
    "postgresql://idsync@127.0.0.1:5432,db:5432/sites", "postgresql://idsync@127.0.0.1/sites?host=db",
    "postgresql://idsync@localhost/sites?hostaddr=10.0.0.5",
])
def test_any_host_off_this_machine_makes_a_store_remote(url):
    assert not local_postgres(url) and tls_of(url).required


def test_a_tls_key_applies_on_this_machine_too(tmp_path: Path):
    (tmp_path / "ca.pem").write_text("CA")
    (tmp_path / "client.pem").write_text("cert")
    (tmp_path / "client.key").write_text("key")
    tls = tls_of("postgresql://idsync@127.0.0.1/sites", source=tmp_path / "topology.yaml",
                 tls={"ca_file": "ca.pem", "cert_file": "client.pem", "key_file": "client.key", "min_version": 1.3})
    assert tls.required and tls.verify and tls.files.ca_file == tmp_path / "ca.pem"
    assert libpq_tls(tls) == {"sslmode": "verify-full", "sslrootcert": str(tmp_path / "ca.pem"),
                              "ssl_min_protocol_version": "TLSv1.3", "sslcert": str(tmp_path / "client.pem"),
                              "sslkey": str(tmp_path / "client.key")}


def test_verify_false_is_encrypted_but_unverified():
    tls = tls_of("postgresql://idsync@db/sites", tls={"verify": False})
    assert libpq_tls(tls) == {"sslmode": "require", "ssl_min_protocol_version": "TLSv1.2"}


def test_a_client_certificate_with_its_key_in_the_same_file(tmp_path: Path):
    (tmp_path / "client.pem").write_text("cert and key")
    tls = tls_of("postgresql://idsync@db/sites", source=tmp_path / "topology.yaml",
                 tls={"cert_file": "client.pem"})
    assert libpq_tls(tls)["sslkey"] == libpq_tls(tls)["sslcert"] == str(tmp_path / "client.pem")


@pytest.mark.parametrize("entry, where, message", [
    ({"url": "x.db", "tls": {"verify": False}}, "sites.stores[0].tls", "only a postgresql:// store"),
    ({"url": "postgresql://u@db/s?sslmode=disable"}, "sites.stores[0].url", "must not set sslmode; the store's tls:"),
    ({"url": "postgresql://u@db/s?connect_timeout=3&sslrootcert=/x"}, "sites.stores[0].url",
     "must not set sslrootcert"),
    ({"url": "postgresql://u@db/s?requiressl=1"}, "sites.stores[0].url", "must not set requiressl"),
    ({"url": "postgresql://u@db/s?ssl_min_protocol_version=TLSv1"}, "sites.stores[0].url",
     "must not set ssl_min_protocol_version"),
    ({"url": "postgresql://u@db/s", "tls": {"verfy": False}}, "sites.stores[0].tls.verfy", "did you mean verify?"),
    ({"url": "postgresql://u@db/s", "tls": {"verify": "no"}}, "sites.stores[0].tls.verify", "true or false"),
    ({"url": "postgresql://u@db/s", "tls": "verify-full"}, "sites.stores[0].tls", "expected a mapping"),
    ({"url": "postgresql://u@db/s", "tls": {"ca_file": "/no/such/ca.pem"}}, "sites.stores[0].tls.ca_file",
     "no such file"),
    ({"url": "postgresql://u@db/s", "tls": {"min_version": "1.1"}}, "sites.stores[0].tls.min_version",
     "expected one of 1.2, 1.3"),
    ({"url": "postgresql://u@db/s", "tls": {"enabled": False}}, "sites.stores[0].tls.enabled", "unknown key"),
])
def test_every_tls_mistake_is_reported_with_its_path(entry, where, message):
    found = errors(config({"stores": [{"name": "a", **entry}]}))
    assert any(error.startswith(f"{where}:") and message in error for error in found), found


def test_verify_false_with_a_ca_file_is_a_contradiction(tmp_path: Path):
    (tmp_path / "ca.pem").write_text("CA")
    found = errors(config(store("postgresql://u@db/s", tls={"verify": False, "ca_file": str(tmp_path / "ca.pem")})))
    assert any(e.startswith("sites.stores[0].tls.ca_file:") and "unused with verify: false" in e for e in found)


def test_a_key_without_its_certificate(tmp_path: Path):
    (tmp_path / "client.key").write_text("key")
    found = errors(config(store("postgresql://u@db/s", tls={"key_file": str(tmp_path / "client.key")})))
    assert any(e.startswith("sites.stores[0].tls.key_file:") and "set cert_file too" in e for e in found)


def test_no_system_ca_bundle_needs_attention(monkeypatch: pytest.MonkeyPatch):
    import ssl

    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: ssl.DefaultVerifyPaths(
        None, None, "SSL_CERT_FILE", "/nonexistent/cert.pem", "SSL_CERT_DIR", "/nonexistent/certs"))
    with pytest.raises(NeedsAttention, match="store pg: no system CA bundle.*set tls.ca_file"):
        libpq_tls(PostgresTls(), "postgresql site store pg")


@pytest.mark.parametrize("message, refusal", [
    ('connection to server at "10.0.0.5", port 5432 failed: SSL error: certificate verify failed',
     "certificate not accepted"),
    ('server certificate for "db.example" does not match host name "10.0.0.5"', "certificate not for this host"),
    ("server does not support SSL, but SSL was required", "the server offers no TLS"),
    ('connection to server at "10.0.0.5", port 5432 failed: FATAL:  connection requires a valid client certificate',
     "the server asks for a client certificate"),
    ('connection to server at "10.0.0.5", port 5432 failed: Connection refused', None),
    ("server closed the connection unexpectedly", None),
])
def test_which_connection_failures_are_tls_refusals(message, refusal):
    assert tls_refusal(Exception(message)) == refusal
