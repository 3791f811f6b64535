"""Forests over ldaps:// and StartTLS against slapd servers with certificates of the rig's test CA:
verified connections sync end to end; an untrusted certificate or a host name that does not match
is refused before the bind is sent, with one clear error naming the forest, while the other
forests go on."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from idsync.rig import SlapdInstance
from idsync.rig.pki import TestCA
from tests.integration.gal import GalDeployment, deploy, eventually

pytestmark = pytest.mark.integration

SYNC_DEADLINE = 5.0


def verified(directories, ca: TestCA) -> dict[str, dict[str, object]]:
    """The central forest and forest A over ldaps://, forest B over StartTLS (its push reader's
    persistent search included), all trusting the test CA."""
    trust = {"ca_file": str(ca.cert)}
    return {
        "central": {"url": directories.central.ldaps_url, "tls": trust},
        "forest_a": {"url": directories.forest_a.ldaps_url, "tls": trust},
        "forest_b": {"url": directories.forest_b.url, "tls": {"starttls": True} | trust},
    }


@pytest.fixture
def deployments(kafka_broker, secure_directories, unique_name: str, tmp_path: Path) -> Iterator[list[GalDeployment]]:
    made: list[GalDeployment] = []
    yield made
    for deployment in made:
        deployment.stop_workers()


def start(deployments, kafka_broker, secure_directories, unique_name, tmp_path, forest_settings) -> GalDeployment:
    deployment = deploy(tmp_path, unique_name, kafka_broker, secure_directories._asdict(),
                        forest_settings=forest_settings)
    deployments.append(deployment)
    return deployment


def contact(gal: GalDeployment, forest: str, cn: str) -> dict[str, list[str]] | None:
    return gal.contacts(forest).get(f"cn={cn},{gal.contacts_ou(forest)}")


def worker_log(gal: GalDeployment) -> str:
    return gal.workers[-1].log_path.read_text(errors="replace")


def connections_since(directory: SlapdInstance, offset: int) -> dict[str, list[str]]:
    """slapd's stats log lines after `offset`, by connection."""
    with directory.log_file.open(errors="replace") as log:
        log.seek(offset)
        lines = log.read().splitlines()
    by_connection: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        if (match := re.search(r"\bconn=(\d+) ", line)) is not None:
            by_connection[match.group(1)].append(line)
    return by_connection


def test_forests_over_ldaps_and_starttls_sync_end_to_end_with_verification_on(
    deployments, kafka_broker, secure_directories, unique_name, tmp_path, test_ca
) -> None:
    log_start = secure_directories.forest_b.log_file.stat().st_size
    gal = start(deployments, kafka_broker, secure_directories, unique_name, tmp_path,
                verified(secure_directories, test_ca))
    ada = gal.add_user("forest_a", "ada", displayName="Ada", mail="ada@a.test")
    bob = gal.add_user("forest_b", "bob", displayName="Bob", mail="bob@b.test")
    gal.start_worker()
    eventually(lambda: contact(gal, "forest_a", "ada") and contact(gal, "forest_b", "bob"), timeout=60,
               what="contacts of both forests")

    # Changes after the snapshot: forest B's arrive through the persistent search over StartTLS.
    gal.modify("forest_b", bob, displayName="Bob over StartTLS")
    eventually(lambda: (contact(gal, "forest_b", "bob") or {}).get("displayname") == ["Bob over StartTLS"],
               timeout=SYNC_DEADLINE, what="update pushed over StartTLS")
    gal.delete("forest_a", ada)
    eventually(lambda: contact(gal, "forest_a", "ada") is None, timeout=SYNC_DEADLINE, what="delete over ldaps")

    log = worker_log(gal)
    for forest, url, encryption in (("central", secure_directories.central.ldaps_url, "ldaps"),
                                    ("forest-a", secure_directories.forest_a.ldaps_url, "ldaps"),
                                    ("forest-b", secure_directories.forest_b.url, "starttls")):
        assert f"ldap connected forest={forest} url={url} tls={encryption} verify=True" in log
    assert "NOT verified" not in log and "needs attention" not in log
    # Every connection of the worker to forest B started TLS before it bound.
    starttls = [lines for lines in connections_since(secure_directories.forest_b, log_start).values()
                if any(" STARTTLS" in line for line in lines)]
    assert starttls and all(any("TLS established" in line for line in lines) for lines in starttls)


@pytest.mark.parametrize(
    ("refused", "other", "settings", "reason"),
    [
        # The system's CA bundle does not know the rig's test CA: as with a server on the path
        # that made its own certificate.
        ("forest_a", "forest_b", lambda d, ca: {"url": d.forest_a.ldaps_url, "tls": {}},
         "certificate not accepted (ldaps to {url}): self-signed certificate in certificate chain"),
        # The certificate is the test CA's, for 127.0.0.1 only.
        ("forest_b", "forest_a",
         lambda d, ca: {"url": d.forest_b.url.replace("127.0.0.1", "localhost"),
                        "tls": {"starttls": True, "ca_file": str(ca.cert)}},
         "certificate not accepted (starttls to {url}): Hostname mismatch, certificate is not valid for 'localhost'."),
    ],
    ids=["untrusted-ca", "host-name-mismatch"],
)
def test_a_certificate_that_fails_verification_is_refused_before_the_bind_while_the_other_forests_go_on(
    deployments, kafka_broker, secure_directories, unique_name, tmp_path, test_ca, refused, other, settings, reason
) -> None:
    directory: SlapdInstance = getattr(secure_directories, refused)
    log_start = directory.log_file.stat().st_size
    forests = verified(secure_directories, test_ca) | {refused: settings(secure_directories, test_ca)}
    gal = start(deployments, kafka_broker, secure_directories, unique_name, tmp_path, forests)
    gal.add_user(refused, "mallory-target", mail="target@x.test")
    gal.add_user(other, "goes-on", mail="goes-on@x.test")
    gal.start_worker()

    eventually(lambda: contact(gal, other, "goes-on"), timeout=60, what="the other forest's contact")
    assert contact(gal, refused, "mallory-target") is None

    forest_name = gal.topology.forest(refused.replace("_", "-")).name
    url = forests[refused]["url"]
    expected = f"forest {forest_name}: {reason.format(url=url)}; the bind was not sent"
    eventually(lambda: "reader needs attention" in worker_log(gal), timeout=10, what="the reader's error line")
    log = worker_log(gal)
    attention = [line for line in log.splitlines() if "needs attention" in line]
    assert attention and all(f"forest={forest_name} " in line and expected in line for line in attention), attention
    assert "Traceback" not in log
    assert directory.admin_password not in log

    # The server saw TLS handshakes fail, and never a bind on those connections.
    failed = [lines for lines in connections_since(directory, log_start).values()
              if any("TLS negotiation failure" in line for line in lines)]
    assert failed, "the refused forest's reader never tried"
    assert not [line for lines in failed for line in lines if " BIND " in line]
