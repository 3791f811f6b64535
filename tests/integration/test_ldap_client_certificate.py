"""A forest whose slapd demands a client certificate (`TLSVerifyClient demand`): with the
certificate and key in its `tls:` settings it syncs end to end, over ldaps:// and over StartTLS;
without them the server closes every TLS connection, and idsync reports that forest's outage with
the likely cause while the other forests go on."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from idsync.rig import SlapdInstance
from idsync.rig.pki import TestCA
from tests.conftest import FOREST_SUFFIXES
from tests.integration.gal import GalDeployment, deploy, eventually
from tests.integration.test_ldap_tls import contact, verified, worker_log

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demanding_forest(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[SlapdInstance]:
    """Forest A, served by a slapd that refuses TLS clients without a certificate of the test CA."""
    forest = SlapdInstance(tmp_path_factory.mktemp("slapd-mtls"), name="forest_a",
                           suffix=FOREST_SUFFIXES["forest_a"], admin_password=secrets.token_urlsafe(16),
                           tls=test_ca.issue("slapd-mtls", hosts=("127.0.0.1",)), demand_client_certificate=True,
                           log_level="stats")
    forest.start()
    try:
        yield forest
    finally:
        forest.stop()


@pytest.fixture
def gal_with(kafka_broker, secure_directories, demanding_forest, test_ca, unique_name, tmp_path):
    """Start a deployment whose forest A is the demanding slapd, with extra `tls:` settings for it."""
    made: list[GalDeployment] = []

    def start(encryption: str, forest_a_tls: dict[str, object]) -> GalDeployment:
        directories = secure_directories._asdict() | {"forest_a": demanding_forest}
        settings = verified(secure_directories, test_ca)
        url, starttls = ((demanding_forest.ldaps_url, {}) if encryption == "ldaps"
                         else (demanding_forest.url, {"starttls": True}))
        settings["forest_a"] = {"url": url, "tls": {"ca_file": str(test_ca.cert)} | starttls | forest_a_tls}
        gal = deploy(tmp_path, unique_name, kafka_broker, directories, forest_settings=settings)
        made.append(gal)
        return gal

    yield start
    for gal in made:
        gal.stop_workers()


ENCRYPTIONS = pytest.mark.parametrize("encryption", ["ldaps", "starttls"])


@ENCRYPTIONS
def test_a_forest_with_its_client_certificate_syncs_end_to_end(gal_with, test_ca, encryption) -> None:
    client = test_ca.issue("idsync-client")
    gal = gal_with(encryption, {"cert_file": str(client.cert), "key_file": str(client.key)})
    ada = gal.add_user("forest_a", "ada", displayName="Ada", mail="ada@a.test")
    gal.start_worker()
    eventually(lambda: contact(gal, "forest_a", "ada"), timeout=60, what="forest A's contact")

    gal.modify("forest_a", ada, displayName="Ada with a client certificate")
    eventually(lambda: (contact(gal, "forest_a", "ada") or {}).get("displayname") == ["Ada with a client certificate"],
               timeout=10, what="forest A's change")
    log = worker_log(gal)
    assert "needs attention" not in log and "Traceback" not in log


@ENCRYPTIONS
def test_a_forest_without_the_client_certificate_its_server_demands_is_an_outage_naming_the_cause(
    gal_with, demanding_forest, encryption
) -> None:
    gal = gal_with(encryption, {})
    gal.add_user("forest_a", "refused", mail="refused@a.test")
    gal.add_user("forest_b", "goes-on", mail="goes-on@b.test")
    gal.start_worker()

    eventually(lambda: contact(gal, "forest_b", "goes-on"), timeout=60, what="the other forest's contact")
    hint = "the server may demand a client certificate: tls.cert_file is not set"
    eventually(lambda: hint in worker_log(gal), timeout=30, what="the outage line with its likely cause")
    log = worker_log(gal)
    assert all("forest=forest-a " in line for line in log.splitlines() if hint in line)
    assert contact(gal, "forest_a", "refused") is None
    assert "Traceback" not in log and demanding_forest.admin_password not in log
