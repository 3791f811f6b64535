"""Two real Active Directory forests (Samba DCs) for the AD integration tests, one per loopback address:
127.0.0.2 and 127.0.0.3 unless another test session on this machine holds them, then the next free ones.

Provisioning is the slow part (~7 s of CPU each), so both domains are provisioned at once; the
DCs are started from the main thread, because their children die with the thread that forked them.
A DC that cannot be provisioned or started makes the tests ERROR (RigError), never skip.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import ldap3
import pytest

from connectors.ad.values import escape_rdn_value
from idsync.rig.samba import AddressClaim, SambaDC, claim_loopback_address
from tests.integration.ad.reader_harness import ReaderDeployment, deploy_reader

USER_CLASSES = ["top", "person", "organizationalPerson", "user"]


class AdForests(NamedTuple):
    alpha: SambaDC
    beta: SambaDC


AD_FORESTS = {
    "alpha": {"realm": "ALPHA.IDSYNC.TEST", "domain": "ALPHA"},
    "beta": {"realm": "BETA.IDSYNC.TEST", "domain": "BETA"},
}


def admin_password() -> str:
    # Samba's default policy wants upper and lower case letters, a digit and a symbol.
    return "Aa1-" + secrets.token_urlsafe(16)


@pytest.fixture(scope="session")
def ad_forests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdForests]:
    workdir = tmp_path_factory.mktemp("samba")
    claims: list[AddressClaim] = []
    dcs: dict[str, SambaDC] = {}
    try:
        for name, spec in AD_FORESTS.items():
            claims.append(claim_loopback_address())
            dcs[name] = SambaDC(workdir, host_ip=claims[-1].address, admin_password=admin_password(), **spec)
        with ThreadPoolExecutor(max_workers=len(dcs)) as pool:
            for provisioned in [pool.submit(dc.provision) for dc in dcs.values()]:
                provisioned.result()
        for dc in dcs.values():
            dc.start()
        yield AdForests(**dcs)
    finally:
        for dc in dcs.values():
            dc.stop()
        for claim in claims:
            claim.release()


class Directory:
    """Writes to one AD forest as Administrator, below a test's own OU (with sub-OUs a and b)."""

    def __init__(self, dc: SambaDC, connection: ldap3.Connection, ou_name: str) -> None:
        self.dc = dc
        self.connection = connection
        self.ou = f"OU={ou_name},{dc.base_dn}"
        for dn in (self.ou, f"OU=a,{self.ou}", f"OU=b,{self.ou}"):
            self.connection.add(dn, ["top", "organizationalUnit"])

    def add_user(self, cn: str, ou: str = "a", **attributes: object) -> str:
        dn = f"CN={escape_rdn_value(cn)},OU={ou},{self.ou}"
        self.connection.add(dn, USER_CLASSES, {"sAMAccountName": f"u{secrets.token_hex(8)}", **attributes})
        return dn

    def add_group(self, cn: str, ou: str = "a") -> str:
        dn = f"CN={escape_rdn_value(cn)},OU={ou},{self.ou}"
        self.connection.add(dn, ["top", "group"], {"sAMAccountName": f"g{secrets.token_hex(8)}"})
        return dn

    def replace(self, dn: str, **attributes: object) -> None:
        self.connection.modify(dn, {name: [(ldap3.MODIFY_REPLACE, [value])] for name, value in attributes.items()})

    def members(self, group: str, op: str, *members: str) -> None:
        self.connection.modify(group, {"member": [(op, list(members))]})

    def delete(self, dn: str) -> None:
        self.connection.delete(dn)

    def read(self, dn: str) -> dict:
        self.connection.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["*"])
        entry = self.connection.response[0]
        return {"dn": entry["dn"], **{k.lower(): v for k, v in entry["raw_attributes"].items()}}


@pytest.fixture
def alpha(ad_forests: AdForests, unique_name: str) -> Iterator[Directory]:
    with ad_forests.alpha.admin_connection(raise_exceptions=True) as connection:
        yield Directory(ad_forests.alpha, connection, unique_name)


@pytest.fixture
def reader(
    kafka_broker, ad_forests: AdForests, alpha: Directory, unique_name: str, tmp_path: Path, mode: str
) -> Iterator[ReaderDeployment]:
    """A reader process of `mode` (the test's parameter) for alpha's test OU; stopped afterwards."""
    deployment = deploy_reader(
        tmp_path / "reader", unique_name, kafka_broker, alpha.dc, ad_forests.beta, base_dn=alpha.ou, mode=mode
    )
    try:
        yield deployment
    finally:
        deployment.stop()
