"""Full import, mark and sweep, and the mass-delete guard."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from streams.events import ChangeOp, DirectoryChange, ObjectKind
from tests.integration.gal import GalDeployment, eventually
from tests.integration.test_gal_sync import SYNC_DEADLINE, contact_named, wait_until_running

pytestmark = pytest.mark.integration


def ghost(gal: GalDeployment, name: str) -> DirectoryChange:
    """A user the metaverse learnt of long ago and whose delete nobody saw."""
    return DirectoryChange(
        forest="forest-a",
        object_id=f"ghost-{name}",
        op=ChangeOp.ADD,
        kind=ObjectKind.USER,
        dn=f"uid={name},{gal.people('forest_a')}",
        attributes={"objectClass": ("inetOrgPerson",), "cn": (name,), "sn": (name,), "mail": (f"{name}@old.test",)},
        position="20000101000000.000000Z",
        changed_at="2000-01-01T00:00:00Z",
    )


async def produce_changes(gal: GalDeployment, changes: list[DirectoryChange]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=gal.broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for change in changes:
            await producer.send_and_wait(
                gal.topology.kafka.topics.changes, key=change.key.encode(), value=change.to_bytes()
            )
    finally:
        await producer.stop()


def test_full_import_sweeps_objects_deleted_unseen(gal: GalDeployment) -> None:
    wait_until_running(gal)
    gal.add_user("forest_a", "kept")
    asyncio.run(produce_changes(gal, [ghost(gal, "vanished")]))
    eventually(lambda: contact_named(gal, "forest_a", "vanished"), timeout=SYNC_DEADLINE, what="ghost contact")
    eventually(lambda: contact_named(gal, "forest_a", "kept"), timeout=SYNC_DEADLINE, what="real contact")

    output = gal.idsync("import", "--full", "--forest", "forest-a")

    assert "forest=forest-a" in output and "objects=3" in output  # the OU itself, before.start, kept
    eventually(lambda: contact_named(gal, "forest_a", "vanished") is None, timeout=SYNC_DEADLINE, what="sweep")
    assert contact_named(gal, "forest_a", "kept") and contact_named(gal, "forest_a", "before.start")


@pytest.mark.streams(sweep_max_fraction=0.1, sweep_always_allowed=0)
def test_a_sweep_over_the_mass_delete_guard_holds_its_deletes_until_approved(gal: GalDeployment) -> None:
    wait_until_running(gal)
    ghosts = [ghost(gal, f"old{i}") for i in range(5)]
    asyncio.run(produce_changes(gal, ghosts))
    eventually(lambda: len(gal.contacts("forest_a")) == 6, timeout=SYNC_DEADLINE, what="ghost contacts")

    gal.idsync("import", "--full", "--forest", "forest-a")
    eventually(lambda: "5 held deletes" in gal.idsync("deletes", "--held"), timeout=SYNC_DEADLINE, what="held deletes")
    gal.wait_until_processed()
    assert len(gal.contacts("forest_a")) == 6
    assert "approved all 5 held deletes" in gal.idsync("deletes", "approve")
    eventually(lambda: len(gal.contacts("forest_a")) == 1, timeout=SYNC_DEADLINE, what="approved sweep")

    # Allowed by the operator up front, a sweep over the guard deletes at once.
    asyncio.run(produce_changes(gal, [ghost(gal, f"older{i}") for i in range(5)]))
    eventually(lambda: len(gal.contacts("forest_a")) == 6, timeout=SYNC_DEADLINE, what="more ghost contacts")
    gal.idsync("import", "--full", "--forest", "forest-a", "--allow-mass-delete")
    eventually(lambda: len(gal.contacts("forest_a")) == 1, timeout=SYNC_DEADLINE, what="allowed sweep")
    assert "no held deletes" in gal.idsync("deletes", "--held")
