"""Active Directory forests over verified TLS against a real Samba DC serving a certificate of the
rig's test CA: ldaps:// (ad-dirsync) and StartTLS (ad-usn-poll) read a user's changes; an untrusted
CA or a certificate for another name is refused before the bind is sent, naming the forest.

One DC of its own for this module (provisioned once; the mismatch test restarts it with another
certificate and puts the right one back)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest

from connectors.ad.dirsync import DirSyncReader
from connectors.ad.usn_poll import UsnPollReader
from idsync.rig.pki import TestCA
from idsync.rig.samba import SambaDC, claim_loopback_address
from streams.config.security import LdapTls, TlsFiles
from streams.config.forests import Forest
from streams.contracts import NeedsAttention
from tests.integration.ad.conftest import Directory, admin_password
from tests.integration.ad.test_dirsync_reader import changes_until, count, forest_of, only

pytestmark = pytest.mark.integration


@dataclasses.dataclass
class TlsDC:
    dc: SambaDC
    ca: TestCA


@pytest.fixture(scope="module")
def tls_dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDC]:
    workdir = tmp_path_factory.mktemp("samba-tls")
    claim = claim_loopback_address()
    try:
        ca = TestCA(workdir / "ca").create()
        dc = SambaDC(workdir, realm="TLS.IDSYNC.TEST", domain="TLSDC", host_ip=claim.address,
                     admin_password=admin_password())
        dc.use_tls(ca.issue("samba-dc", hosts=(claim.address,)))
        with dc:
            yield TlsDC(dc, ca)
    finally:
        claim.release()


@pytest.fixture
def directory(tls_dc: TlsDC, unique_name: str) -> Iterator[Directory]:
    with tls_dc.dc.admin_connection(raise_exceptions=True) as connection:
        yield Directory(tls_dc.dc, connection, unique_name)


def tls_forest(directory: Directory, tmp_path: Path, *, mode: str, starttls: bool, ca_file: Path) -> Forest:
    forest = forest_of(directory.dc, "tlsforest", directory.ou, tmp_path, mode=mode)
    url = f"ldap://{directory.dc.host_ip}" if starttls else f"ldaps://{directory.dc.host_ip}"
    return dataclasses.replace(forest, url=url, tls=LdapTls(starttls=starttls, files=TlsFiles(ca_file=ca_file)))


@pytest.fixture
def binds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every bind idsync's connections send (the spy runs before ldap3's bind)."""
    sent: list[str] = []
    original = ldap3.Connection.bind

    def spy(self: ldap3.Connection, *args: object, **kwargs: object) -> object:
        sent.append(str(self.user))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ldap3.Connection, "bind", spy)
    return sent


@pytest.mark.parametrize(("mode", "starttls"), [("ad-dirsync", False), ("ad-usn-poll", True)])
async def test_verified_tls_reads_a_users_changes(
    tls_dc: TlsDC, directory: Directory, tmp_path: Path, mode: str, starttls: bool, binds: list[str]
) -> None:
    forest = tls_forest(directory, tmp_path, mode=mode, starttls=starttls, ca_file=tls_dc.ca.cert)
    reader = (DirSyncReader if mode == "ad-dirsync" else UsnPollReader)(forest)
    try:
        snapshot = await reader.read(None)
        user = directory.add_user("Tls User", displayName="Tls A")
        added, position = await changes_until(reader, snapshot.position, count(1))
        assert only(added).dn == user
        directory.replace(user, displayName="Tls B")
        modified, _ = await changes_until(reader, position, count(1))
        assert only(modified).dn == user
        assert dict(only(modified).attributes).get("displayName", ("Tls B",)) == ("Tls B",) or any(
            m.values == ("Tls B",) for m in only(modified).modifications)
    finally:
        await reader.close()
    assert binds, "the reader never bound"


async def refusal(reader) -> str:
    """What the reader's first read is refused with (NeedsAttention: only a person can mend it)."""
    try:
        with pytest.raises(NeedsAttention) as refused:
            await reader.read(None)
    finally:
        await reader.close()
    return str(refused.value)


@pytest.mark.parametrize(("mode", "starttls"), [("ad-dirsync", False), ("ad-usn-poll", True)])
async def test_another_ca_is_refused_before_the_bind(
    tls_dc: TlsDC, directory: Directory, tmp_path: Path, mode: str, starttls: bool, binds: list[str]
) -> None:
    stranger = TestCA(tmp_path / "other-ca", name="another CA").create()
    forest = tls_forest(directory, tmp_path, mode=mode, starttls=starttls, ca_file=stranger.cert)
    message = await refusal((DirSyncReader if mode == "ad-dirsync" else UsnPollReader)(forest))
    assert "forest tlsforest: certificate not accepted" in message
    assert "certificate verify failed" in message or "unable to get local issuer" in message, message
    assert "the bind was not sent" in message
    assert binds == []


async def test_a_certificate_for_another_name_is_refused(
    tls_dc: TlsDC, directory: Directory, tmp_path: Path, binds: list[str]
) -> None:
    dc = tls_dc.dc
    dc.stop()
    try:
        dc.use_tls(tls_dc.ca.issue("elsewhere", hosts=("dc.elsewhere.test", "127.0.0.250")))
        dc.start()
        binds.clear()  # the rig's own readiness check binds as Administrator
        forest = tls_forest(directory, tmp_path, mode="ad-dirsync", starttls=False, ca_file=tls_dc.ca.cert)
        message = await refusal(DirSyncReader(forest))
        assert "forest tlsforest: certificate not accepted" in message
        assert "mismatch" in message.lower() or "doesn't match" in message or "does not match" in message, message
        assert binds == []
    finally:
        dc.stop()
        dc.use_tls(tls_dc.ca.issue("samba-dc", hosts=(dc.host_ip,)))
        dc.start()
