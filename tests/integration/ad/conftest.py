"""Two real Active Directory forests (Samba DCs) for the AD integration tests, one per loopback address.

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

from idsync.rig.samba import SambaDC


class AdForests(NamedTuple):
    alpha: SambaDC
    beta: SambaDC


AD_FORESTS = {
    "alpha": {"realm": "ALPHA.IDSYNC.TEST", "domain": "ALPHA", "host_ip": "127.0.0.2"},
    "beta": {"realm": "BETA.IDSYNC.TEST", "domain": "BETA", "host_ip": "127.0.0.3"},
}


def admin_password() -> str:
    # Samba's default policy wants upper and lower case letters, a digit and a symbol.
    return "Aa1-" + secrets.token_urlsafe(16)


@pytest.fixture(scope="session")
def ad_forests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdForests]:
    workdir = tmp_path_factory.mktemp("samba")
    dcs = {name: SambaDC(workdir, admin_password=admin_password(), **spec) for name, spec in AD_FORESTS.items()}
    try:
        with ThreadPoolExecutor(max_workers=len(dcs)) as pool:
            for provisioned in [pool.submit(dc.provision) for dc in dcs.values()]:
                provisioned.result()
        for dc in dcs.values():
            dc.start()
        yield AdForests(**dcs)
    finally:
        for dc in dcs.values():
            dc.stop()
