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
from typing import NamedTuple

import pytest

from idsync.rig.samba import AddressClaim, SambaDC, claim_loopback_address


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
