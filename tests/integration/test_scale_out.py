"""Scale-out on Kafka (issue #13, item 3): several workers in one deployment share the engine's and
the sinks' partitions, and each forest's reader runs on exactly one of them at a time, under a
lease held through a Kafka consumer group (streams/kafka/lease.py), taken over when its holder
dies. A deployment may also run readers, processors and sinks as separate processes."""

from __future__ import annotations

import re

import pytest

from tests.integration.gal import GalDeployment, eventually
from tests.integration.test_metaverse_engine import contacts_by_mail, dead_letters

pytestmark = pytest.mark.integration

START = 90.0


def lease_holders(gal: GalDeployment, lease: str) -> list[int]:
    """The workers (by index) whose log says they acquired `lease`, in log order per worker."""
    pattern = re.compile(rf"lease acquired lease={re.escape(lease)}\b")
    return [i for i, worker in enumerate(gal.workers)
            if worker.log_path.exists() and pattern.search(worker.log_path.read_text())]


def test_three_workers_one_killed_mid_burst_nothing_lost_or_doubled_and_its_readers_taken_over(
        gal: GalDeployment) -> None:
    gal.add_user("forest_a", "before", displayName="Before", mail="before@corp.test")
    for _ in range(3):
        gal.start_worker()
    eventually(lambda: len(gal.contacts()) == 1, timeout=START, what="the first contact")
    holders = {forest: eventually(lambda forest=forest: lease_holders(gal, f"forest-{forest}"), timeout=START,
                                  what=f"a holder of {forest}'s reader lease")
               for forest in ("central", "forest-a", "forest-b")}
    assert all(len(found) == 1 for found in holders.values()), f"a reader runs on more than one worker: {holders}"
    victim = holders["forest-a"][0]

    expected = {"before@corp.test": "Before"}
    for n in range(240):
        forest = "forest_a" if n % 2 else "forest_b"
        gal.add_user(forest, f"s{n:03d}", displayName=f"S {n}", mail=f"s{n:03d}@corp.test")
        expected[f"s{n:03d}@corp.test"] = f"S {n}"
        if n == 80:
            gal.workers[victim].kill()
    eventually(lambda: len([i for i in lease_holders(gal, "forest-forest-a") if i != victim]) == 1, timeout=START,
               what="forest-a's reader taken over by a surviving worker")
    gal.wait_until_processed(timeout=120)

    found = {mail: [c["displayname"][0] for c in group] for mail, group in contacts_by_mail(gal).items()}
    assert {mail: names for mail, names in found.items() if len(names) != 1} == {}, "a person got two contacts"
    assert {mail: names[0] for mail, names in found.items()} == expected
    assert not dead_letters(gal)
    for forest, before in holders.items():
        after = lease_holders(gal, f"forest-{forest}")
        # A reader that ran on the victim moved to one survivor; the others never moved.
        assert len(after) == 2 if victim in before else after == before, (forest, before, after)
    assert all(gal.workers[i].running for i in range(3) if i != victim)


def test_readers_processor_and_sinks_as_separate_processes(gal: GalDeployment) -> None:
    gal.start_worker(components="readers")
    gal.start_worker(components="processor")
    gal.start_worker(components="sinks")
    gal.add_user("forest_a", "ann", displayName="Ann", mail="ann@corp.test")
    gal.add_user("forest_b", "ann-b", displayName="Ann B", mail="ANN@corp.test")
    eventually(lambda: len(gal.contacts()) == 1, timeout=START, what="one contact for Ann's two objects")
    gal.modify("forest_a", f"uid=ann,{gal.people('forest_a')}", displayName="Ann Lee")
    eventually(lambda: [e["displayname"] for e in gal.contacts().values()] == [["Ann Lee"]], timeout=30,
               what="the change through three processes")
    logs = [worker.log_path.read_text() for worker in gal.workers]
    assert "lease acquired lease=forest-forest-a" in logs[0]
    assert "contact created" in logs[2] and "contact created" not in logs[0] + logs[1]
    assert all(worker.running for worker in gal.workers)
