"""A forest's tls key, and the TLS context and warnings its connections get."""

import logging
import ssl
from pathlib import Path

import pytest

from connectors.ldap import tls as ldap_tls
from idsync.rig.pki import TestCA
from streams.kafka import clients as kafka_clients
from streams.config.security import LdapTls, TlsFiles
from streams.config.topology import parse_topology
from tests.unit.test_topology import config, errors


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """A file that exists (the loader checks paths only; contents are read by the connection)."""
    path = tmp_path / "ca.pem"
    path.write_text("not read at load time\n")
    return path


def test_ldaps_verifies_by_default_and_ldap_is_plain():
    topology = parse_topology(config())
    assert topology.forest("forest-a").tls == LdapTls()
    assert topology.forest("forest-a").tls.verify is True
    assert topology.forest("forest-a").encryption == "ldaps"
    assert topology.forest("central").encryption == "none"


def test_starttls_as_a_word_or_a_mapping():
    for tls in ("starttls", {"starttls": True}):
        forest = parse_topology(config(**{"forests.0.tls": tls})).forest("central")
        assert forest.tls == LdapTls(starttls=True) and forest.encryption == "starttls"


def test_files_resolve_against_the_topology_directory(tmp_path: Path, pem: Path):
    forest = parse_topology(
        config(**{"forests.1.tls": {"ca_file": "ca.pem", "cert_file": str(pem), "min_version": 1.3}}),
        source=tmp_path / "topology.yaml",
    ).forest("forest-a")
    assert forest.tls == LdapTls(files=TlsFiles(ca_file=pem, cert_file=pem), min_version="1.3")


def test_verification_is_turned_off_only_explicitly():
    assert parse_topology(config(**{"forests.1.tls": {"verify": False}})).forest("forest-a").tls.verify is False


@pytest.mark.parametrize(
    ("tls", "messages"),
    [
        ({"starttls": True}, ["forests[1].tls.starttls: an ldaps:// URL is encrypted from the start; StartTLS is for "
                              "ldap:// URLs"]),
        ("ldaps", ["forests[1].tls: expected starttls or a mapping of starttls, verify, ca_file, cert_file, key_file, "
                   "min_version, got 'ldaps'"]),
        ({"verify": "no"}, ["forests[1].tls.verify: expected true or false, got a string"]),
        ({"ca_file": "/nonexistent/ca.pem"}, ["forests[1].tls.ca_file: no such file: '/nonexistent/ca.pem'"]),
        ({"min_version": 1.1}, ["forests[1].tls.min_version: expected one of 1.2, 1.3 (TLS 1.2 or 1.3), got 1.1"]),
        ({"verfy": False}, ["forests[1].tls.verfy: unknown key (did you mean verify?)"]),
        ({"password": "x"}, ["forests[1].tls.password: passwords must not be written in the topology; use "
                             "password_env (an environment variable) or password_file (a file)"]),
    ],
)
def test_bad_tls_settings_are_reported_at_their_path(tls, messages):
    assert errors(config(**{"forests.1.tls": tls})) == messages


def test_tls_settings_on_a_plain_url_without_starttls_are_refused(pem: Path):
    assert errors(config(**{"forests.0.tls": {"ca_file": str(pem)}})) == [
        "forests[0].tls: settings for an unencrypted ldap:// URL: use an ldaps:// URL, or starttls: true"
    ]


def test_key_without_certificate_and_ca_without_verification_are_refused(pem: Path):
    assert errors(config(**{"forests.1.tls": {"key_file": str(pem), "verify": False, "ca_file": str(pem)}})) == [
        "forests[1].tls.key_file: a client key needs its certificate: set cert_file too",
        "forests[1].tls.ca_file: unused with verify: false (nothing is verified); remove one of them",
    ]


def test_the_context_verifies_certificate_and_host_name_with_a_minimum_version():
    context = ldap_tls.ssl_context(LdapTls())
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.cert_store_stats()["x509_ca"] > 0 or ssl.get_default_verify_paths().cafile is None
    assert ldap_tls.ssl_context(LdapTls(min_version="1.3")).minimum_version == ssl.TLSVersion.TLSv1_3


def test_the_context_verifies_nothing_only_with_verify_false():
    context = ldap_tls.ssl_context(LdapTls(verify=False))
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)


def _forest(url: str, tls: dict | None = None):
    changes = {"forests.1.url": url} | ({"forests.1.tls": tls} if tls else {})
    return parse_topology(config(**changes)).forest("forest-a")


@pytest.mark.parametrize(
    ("url", "tls", "warning"),
    [
        ("ldaps://a.example:636", {"verify": False}, "ldap certificate NOT verified forest=forest-a"),
        ("ldap://a.example:389", None, "ldap connection NOT encrypted forest=forest-a"),
        ("ldap://127.0.0.1:389", None, None),
        ("ldaps://a.example:636", None, None),
        ("ldap://a.example:389", "starttls", None),
    ],
)
def test_a_warning_at_the_first_connection_of_a_start_when_the_password_is_exposed(
    url, tls, warning, caplog, monkeypatch
):
    monkeypatch.setattr(ldap_tls, "_warned", set())
    forest = _forest(url, tls)
    with caplog.at_level(logging.WARNING, logger=ldap_tls.__name__):
        ldap_tls.warn_once(forest)
        ldap_tls.warn_once(forest)
    messages = [record.getMessage() for record in caplog.records]
    assert [m for m in messages if warning and m.startswith(warning)] == ([messages[0]] if warning else [])
    assert len(messages) == (1 if warning else 0)


def test_refusals_name_the_forest_and_the_reason():
    forest = _forest("ldaps://a.example:636")
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "Hostname mismatch, certificate is not valid for 'a.example'."
    assert str(ldap_tls.refusal(forest, error)) == (
        "forest forest-a: certificate not accepted (ldaps to ldaps://a.example:636): Hostname mismatch, "
        "certificate is not valid for 'a.example'.; the bind was not sent"
    )
    assert str(ldap_tls.starttls_refused(forest, "unavailable: TLS not configured")).startswith(
        "forest forest-a: StartTLS refused by ldaps://a.example:636: unavailable: TLS not configured;"
    )


def test_a_client_certificate_is_loaded_and_a_key_of_another_certificate_is_a_clear_refusal(tmp_path: Path):
    ca = TestCA(tmp_path / "ca").create()
    client, other = ca.issue("client"), ca.issue("other")
    ldap_tls.ssl_context(LdapTls(files=TlsFiles(ca_file=ca.cert, cert_file=client.cert, key_file=client.key)))
    kafka_clients.ssl_context(TlsFiles(ca_file=ca.cert, cert_file=client.cert, key_file=client.key))

    forest = _forest("ldaps://127.0.0.1:1", {"ca_file": str(ca.cert), "cert_file": str(client.cert),
                                               "key_file": str(other.key)})
    tls = ldap_tls.VerifiedTls(forest)
    with pytest.raises(ssl.SSLError):
        tls.wrap_socket(None, do_handshake=True)
    assert tls.files_failed
    assert str(ldap_tls.refusal(forest, tls.failure, files=True)).startswith(
        "forest forest-a: TLS files not usable (ldaps to ldaps://127.0.0.1:1): [X509: KEY_VALUES_MISMATCH]"
    )


def test_a_connection_closed_in_tls_names_the_client_certificate_as_the_likely_cause(pem: Path):
    assert ldap_tls.client_certificate_hint(_forest("ldaps://a.example:636")) == (
        "the server may demand a client certificate: tls.cert_file is not set"
    )
    with_certificate = _forest("ldaps://a.example:636", {"cert_file": str(pem)})
    assert ldap_tls.client_certificate_hint(with_certificate) == (
        f"the server may not accept the client certificate {pem}"
    )
