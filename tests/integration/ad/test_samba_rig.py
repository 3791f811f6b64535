"""The Samba DC rig itself: what it offers the AD tests and what it refuses."""

from __future__ import annotations

from pathlib import Path

import ldap3
import pytest

from idsync.rig.errors import RigError
from idsync.rig.samba import SambaDC, claim_loopback_address
from tests.integration.ad.conftest import AdForests

pytestmark = pytest.mark.integration


def test_each_forest_is_its_own_domain_on_its_own_address(ad_forests: AdForests) -> None:
    alpha, beta = ad_forests
    for dc, other in [(alpha, beta), (beta, alpha)]:
        with dc.admin_connection() as connection:
            assert connection.search(dc.base_dn, "(objectClass=domain)", search_scope=ldap3.BASE)
            assert not connection.search(other.base_dn, "(objectClass=domain)", search_scope=ldap3.BASE)
    assert ad_forests.alpha.base_dn == "DC=alpha,DC=idsync,DC=test"
    assert ad_forests.beta.base_dn == "DC=beta,DC=idsync,DC=test"
    assert len({dc.host_ip for dc in ad_forests}) == 2


def test_claims_skip_addresses_held_by_a_running_dc(ad_forests: AdForests) -> None:
    claim = claim_loopback_address()
    try:
        assert claim.address not in {dc.host_ip for dc in ad_forests}
        # Held until released, even within this process.
        second = claim_loopback_address(claim.address)
        assert second.address != claim.address
        second.release()
    finally:
        claim.release()


def test_refuses_an_address_already_served(ad_forests: AdForests, tmp_path: Path) -> None:
    intruder = SambaDC(tmp_path, realm="INTRUDER.IDSYNC.TEST", domain="INTRUDER", host_ip=ad_forests.alpha.host_ip,
                       admin_password="Aa1-not-used")
    with pytest.raises(RigError, match=f"{ad_forests.alpha.host_ip}:389 is already in use"):
        intruder.start()
    assert not intruder.provisioned


@pytest.mark.parametrize(
    "kwargs",
    [
        {"realm": "LOCAL", "domain": "X", "host_ip": "127.0.0.9"},
        {"realm": "A.TEST", "domain": "MUCH-TOO-LONG-NAME", "host_ip": "127.0.0.9"},
        {"realm": "A.TEST", "domain": "X", "host_ip": "10.0.0.1"},
    ],
)
def test_refuses_settings_samba_cannot_serve_here(kwargs: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SambaDC(tmp_path, admin_password="Aa1-not-used", **kwargs)
