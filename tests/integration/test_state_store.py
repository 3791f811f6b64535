"""The engine's tables on disk (streams.state_store: rocksdb, the default): a worker restarted on
its state directory comes back from local state and the changelogs' tail, and goes on exactly
where it stopped, after a clean stop and after kill -9 alike."""

from __future__ import annotations

import pytest

from tests.integration.gal import GalDeployment, eventually
from tests.integration.test_metaverse_engine import contacts_by_mail, dead_letters

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stop", ["clean", "kill"])
def test_a_worker_restarted_on_its_state_directory_goes_on_where_it_stopped(gal: GalDeployment, stop: str) -> None:
    assert gal.topology.streams.state_store == "rocksdb"
    for n in range(20):
        gal.add_user("forest_a", f"r{n:02d}", displayName=f"R {n}", mail=f"r{n:02d}@corp.test")
    first = gal.start_worker()
    eventually(lambda: len(gal.contacts()) == 20, timeout=90, what="twenty contacts")
    gal.wait_until_processed()
    if stop == "clean":
        first.stop()
    else:
        first.kill()
    assert any(first.state_dir.rglob("*.sst")) or any(first.state_dir.rglob("*.log")), "no table on disk"

    gal.add_user("forest_b", "r00-b", displayName="R zero in b", mail="R00@corp.test")  # joins r00's person
    gal.add_user("forest_a", "late", displayName="Late", mail="late@corp.test")
    gal.modify("forest_a", f"uid=r05,{gal.people('forest_a')}", displayName="R five")
    gal.start_worker(state_of=first)
    eventually(lambda: len(gal.contacts()) == 21, timeout=90, what="the contact of the user added while stopped")
    gal.wait_until_processed()
    found = {mail: [c["displayname"][0] for c in group] for mail, group in contacts_by_mail(gal).items()}
    assert {mail: names for mail, names in found.items() if len(names) != 1} == {}
    assert found["r05@corp.test"] == ["R five"] and found["r00@corp.test"] == ["R 0"]  # forest-a wins
    assert found["late@corp.test"] == ["Late"]
    assert not dead_letters(gal)
