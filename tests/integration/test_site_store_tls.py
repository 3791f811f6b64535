"""PostgreSQL site stores over verified TLS, against the rig's PostgreSQL servers with certificates
of the test CA: a store trusting that CA connects encrypted; a certificate of another CA, one for
another host name, or a server with no TLS at all is refused with one clear error naming the store
(NeedsAttention: a person must mend it, so the worker tries again only now and then); verify: false
connects encrypted and says so in a WARNING. The password is in no log line and no error."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.sites import SqlSiteStore, open_site_store
from idsync import site_components
from idsync.rig.pki import TestCA
from idsync.rig.postgres import PostgresServer
from streams.config.sections import Section
from streams.config.sites import SITES_KEYS, SiteStoreSettings, sites
from streams.contracts import NeedsAttention
from streams.monitoring.metrics import READER_OUTAGES, READER_UP
from streams.monitoring.outages import Outage

pytestmark = pytest.mark.integration

PASSWORD_ENV = "IDSYNC_TEST_TLS_SITES_PASSWORD"


def _server(workdir: Path, name: str, certificate) -> Iterator[PostgresServer]:
    server = PostgresServer(workdir, name=name, tls=certificate)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[PostgresServer]:
    """TLS with a certificate of the test CA for 127.0.0.1."""
    yield from _server(tmp_path_factory.mktemp("pg-tls"), "tls", test_ca.issue("pg-tls", hosts=("127.0.0.1",)))


@pytest.fixture(scope="module")
def foreign_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """TLS with a certificate for 127.0.0.1 from a CA the stores do not trust."""
    other = TestCA(tmp_path_factory.mktemp("other-ca"), name="another CA").create()
    yield from _server(tmp_path_factory.mktemp("pg-foreign"), "foreign", other.issue("pg", hosts=("127.0.0.1",)))


@pytest.fixture(scope="module")
def mismatched_server(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[PostgresServer]:
    """TLS with a certificate of the test CA, but for another host name than 127.0.0.1."""
    yield from _server(tmp_path_factory.mktemp("pg-mismatch"), "mismatch",
                       test_ca.issue("pg-mismatch", hosts=("db.idsync.test",)))


@pytest.fixture(scope="module")
def demanding_server(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[PostgresServer]:
    """TLS with a certificate of the test CA; idsync's user logs in only with a client certificate."""
    server = PostgresServer(tmp_path_factory.mktemp("pg-mtls"), name="mtls",
                            tls=test_ca.issue("pg-mtls", hosts=("127.0.0.1",)), demand_client_certificate=True)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def make_store(unique_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Settings of a store of this test's own on `server`, read by the topology's own loader from
    the store entry a topology would hold (url, password_env, tls)."""
    opened: list[SqlSiteStore] = []

    def make(server: PostgresServer, tls: dict | None) -> SiteStoreSettings:
        name = "t" + unique_name[-6:]
        url = server.create_database(name)
        monkeypatch.setenv(PASSWORD_ENV, server.password)
        entry = {"name": name, "url": url, "password_env": PASSWORD_ENV} | ({"tls": tls} if tls is not None else {})
        errors: list[str] = []
        settings = sites(Section(errors, {"stores": [entry]}, "sites", SITES_KEYS), None, ())
        assert not errors
        return settings.stores[0]

    yield make, opened
    for store in opened:
        store.close()


def _open(make_store, settings: SiteStoreSettings) -> SqlSiteStore:
    store = open_site_store(settings)
    make_store[1].append(store)
    return store


def _tls_of(store: SqlSiteStore) -> tuple[bool, str | None]:
    with store.engine.transaction() as tx:
        [(ssl, version)] = tx.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    return ssl, version


def _refusal(make_store, settings: SiteStoreSettings) -> str:
    with pytest.raises(NeedsAttention) as raised:
        _open(make_store, settings)
    return str(raised.value)


def test_a_store_trusting_the_ca_connects_encrypted_and_works(make_store, tls_server, test_ca, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_store[0](tls_server, {"ca_file": str(test_ca.cert)})
    store = _open(make_store, settings)
    store.create_site("team")
    store.add_member("team", "alice", {"Title": "Engineer"})
    members, _ = store.members("team")
    assert [(m.login, dict(m.properties)) for m in members] == [("alice", {"Title": "Engineer"})]
    assert _tls_of(store)[0] is True
    assert "NOT verified" not in caplog.text and tls_server.password not in caplog.text


def test_min_version_1_3_is_what_the_connection_uses(make_store, tls_server, test_ca) -> None:
    settings = make_store[0](tls_server, {"ca_file": str(test_ca.cert), "min_version": "1.3"})
    assert _tls_of(_open(make_store, settings)) == (True, "TLSv1.3")


def _refused_naming_the_store(make_store, server: PostgresServer, test_ca: TestCA, caplog, what: str,
                              *details: str) -> None:
    """A store trusting the test CA is refused by `server` (NeedsAttention): `what`, naming the
    store, with `details`; the password is in neither the message nor the log."""
    caplog.set_level(logging.DEBUG)
    settings = make_store[0](server, {"ca_file": str(test_ca.cert)})
    message = _refusal(make_store, settings)
    assert message.startswith(f"postgresql site store {settings.name}: {what}")
    assert all(detail in message for detail in details), message
    assert server.password not in message + caplog.text


def test_a_certificate_of_another_ca_is_refused_naming_the_store(make_store, foreign_server, test_ca, caplog) -> None:
    _refused_naming_the_store(make_store, foreign_server, test_ca, caplog, "certificate not accepted",
                              "certificate verify failed", "the password was not sent")


def test_without_a_ca_file_the_system_bundle_does_not_trust_the_test_ca(make_store, tls_server) -> None:
    settings = make_store[0](tls_server, {"min_version": "1.2"})
    assert "certificate verify failed" in _refusal(make_store, settings)


def test_a_certificate_for_another_host_is_refused(make_store, mismatched_server, test_ca, caplog) -> None:
    _refused_naming_the_store(make_store, mismatched_server, test_ca, caplog, "certificate not for this host",
                              'does not match host name "127.0.0.1"')


def test_a_server_without_tls_is_refused_when_tls_is_configured(make_store, postgres_server, test_ca) -> None:
    settings = make_store[0](postgres_server, {"ca_file": str(test_ca.cert)})
    assert "the server offers no TLS" in _refusal(make_store, settings)


def test_verify_false_connects_encrypted_and_warns(make_store, foreign_server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_store[0](foreign_server, {"verify": False})
    store = _open(make_store, settings)
    store.create_site("team")
    assert _tls_of(store)[0] is True
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "NOT verified" in r.getMessage()]
    assert len(warnings) == 1 and f"store={settings.name}" in warnings[0].getMessage()
    assert foreign_server.password not in caplog.text


def test_a_store_on_127_0_0_1_without_a_tls_key_uses_tls_when_offered(make_store, tls_server) -> None:
    settings = make_store[0](tls_server, None)
    assert _tls_of(_open(make_store, settings))[0] is True  # libpq's prefer


async def test_the_worker_reports_a_refusal_and_tries_again_only_now_and_then(
        make_store, foreign_server, test_ca, caplog, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(site_components, "ATTENTION_RETRY_SECONDS", 0.5)
    settings = make_store[0](foreign_server, {"ca_file": str(test_ca.cert)})
    label = f"site:{settings.name}"
    outage = Outage(f"component=site-reader store={settings.name}", up=READER_UP.labels(label),
                    outages=READER_OUTAGES.labels(label))
    # The gauges are the process's: this reader's must not stay behind, down, for later tests.
    for gauge in (READER_UP, READER_OUTAGES):
        request.addfinalizer(functools.partial(gauge.remove, label))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(site_components.open_site_store_when_up(settings, outage), timeout=1.2)
    errors = [r.getMessage() for r in caplog.records
              if r.levelno == logging.ERROR and "needs attention" in r.getMessage()]
    assert 2 <= len(errors) <= 3, errors
    assert all(f"store={settings.name}" in e and "certificate not accepted" in e for e in errors)
    assert READER_UP.labels(label)._value.get() == 0
    assert foreign_server.password not in caplog.text


def test_a_store_with_the_client_certificate_its_server_demands_connects(make_store, demanding_server,
                                                                         test_ca) -> None:
    client = test_ca.issue("pg-client", hosts=(demanding_server.user,))  # verify-full: the CN is the user
    settings = make_store[0](demanding_server, {"ca_file": str(test_ca.cert), "cert_file": str(client.cert),
                                                "key_file": str(client.key)})
    store = _open(make_store, settings)
    store.create_site("team")
    assert store.sites() == ["team"] and _tls_of(store)[0] is True


def test_a_store_without_the_client_certificate_its_server_demands_needs_attention(
    make_store, demanding_server, test_ca, caplog
) -> None:
    _refused_naming_the_store(make_store, demanding_server, test_ca, caplog, "the server asks for a client certificate",
                              "connection requires a valid client certificate", "the password was not sent")
