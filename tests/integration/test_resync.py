"""`idsync resync` against real Kafka and slapd: the central forest made to match the metaverse
again from the compacted contact states, without reading any source directory."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from tests.integration.gal import GalDeployment, entries, eventually
from tests.integration.test_gal_sync import wait_until_running

pytestmark = pytest.mark.integration


def without_source_directories(gal: GalDeployment) -> Path:
    """The deployment's topology with every user forest pointed at a closed port: a resync that
    read a source directory would fail."""
    document = yaml.safe_load(gal.topology.source.read_text())
    for forest in document["forests"]:
        if forest["role"] == "user":
            forest["url"] = "ldap://127.0.0.1:9/"
    path = gal.workdir / "resync-topology.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def resync(gal: GalDeployment, topology: Path, *args: str) -> str:
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "idsync.cli", "resync", *args, "--topology", str(topology)],
        env={**os.environ, **gal.env}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"resync exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


def test_resync_restores_wiped_and_wrong_contacts_deletes_extra_ones_and_then_writes_nothing(gal: GalDeployment) -> None:
    wait_until_running(gal)
    for name in ("ada", "bob", "cy", "dee"):
        gal.add_user("forest_a", name, displayName=name.title())
    gal.add_user("forest_b", "eve", displayName="Eve")
    eventually(lambda: len(gal.contacts()) == 6, timeout=30, what="six contacts")
    gal.wait_until_processed()
    expected = entries(gal.directories["central"], gal.central_base, "(idsyncAnchor=*)", attributes=["*"])
    gal.stop_workers()

    ou_a = gal.contacts_ou("forest_a")
    with gal.connection("central") as connection:
        connection.modify(f"cn=ada,{ou_a}", {"displayName": [(2, ["Vandalised"])]})
        for dn in expected:
            if not dn.startswith("cn=ada,"):
                connection.delete(dn)
        connection.add(f"cn=Stray,{ou_a}", ["top", "person", "organizationalPerson", "contact"],
                       {"cn": "Stray", "sn": "Stray", "idsyncAnchor": str(uuid.uuid4())})
    topology = without_source_directories(gal)
    before = entries(gal.directories["central"], gal.central_base)

    plan = resync(gal, topology, "--dry-run")
    actions = [line.split()[0] for line in plan.splitlines() if line.startswith(("create ", "correct ", "delete "))]
    assert sorted(actions) == ["correct"] + ["create"] * 5 + ["delete"]
    assert "dry run, nothing changed: would create 5, correct 1, delete 1; unchanged 0" in plan
    assert entries(gal.directories["central"], gal.central_base) == before

    summary = resync(gal, topology)
    assert "created 5, corrected 1, delete requests 1 (held 0)" in summary and "no source directory" in summary
    # The stray contact goes through the delete breaker of the running worker.
    gal.start_worker()
    eventually(lambda: f"cn=Stray,{ou_a}" not in gal.contacts(), timeout=60, what="stray contact deleted")
    gal.wait_until_processed()
    after = entries(gal.directories["central"], gal.central_base, "(idsyncAnchor=*)", attributes=["*"])
    assert {dn: (c["idsyncanchor"], c["displayname"]) for dn, c in after.items()} == {
        dn: (c["idsyncanchor"], c["displayname"]) for dn, c in expected.items()
    }

    again = resync(gal, topology)
    assert "unchanged 6, created 0, corrected 0, delete requests 0" in again

    # As of a moment before a change: the plan puts the older value back.
    before_change = datetime.now(timezone.utc)
    time.sleep(0.05)
    gal.modify("forest_a", f"uid=bob,{gal.people('forest_a')}", displayName="Robert")
    eventually(lambda: gal.contacts().get(f"cn=bob,{ou_a}", {}).get("displayname") == ["Robert"], timeout=10,
               what="the change synced")
    gal.stop_workers()
    as_of = resync(gal, topology, "--dry-run", "--to-datetime", before_change.isoformat())
    assert "would create 0, correct 1, delete 0; unchanged 5" in as_of and f"cn=bob,{ou_a}" in as_of


def test_resync_rebuild_derives_every_contact_again_after_the_rules_changed(gal: GalDeployment) -> None:
    wait_until_running(gal)
    for name in ("ada", "bob"):
        gal.add_user("forest_a", name, displayName=name.title())
    eventually(lambda: len(gal.contacts()) == 3, timeout=30, what="three contacts")
    gal.wait_until_processed()
    gal.stop_workers()
    # A new template: nothing changed at any source, so no event would ever bring it.
    document = yaml.safe_load(gal.topology.source.read_text())
    document["contacts"]["attributes"]["description"] = "GAL entry of {mail}"
    gal.topology.source.write_text(yaml.safe_dump(document, sort_keys=False))
    gal.start_worker()
    gal.wait_until_processed(timeout=60)
    assert not any("description" in c for c in gal.contacts().values())

    summary = resync(gal, gal.topology.source, "--rebuild")
    assert "rebuild: 0 records still to process" in summary
    contacts = gal.contacts()
    assert all(c["description"] == [f"GAL entry of {c['mail'][0]}"] for c in contacts.values()) and len(contacts) == 3
    assert "unchanged 3, created 0, corrected 0" in resync(gal, gal.topology.source)
