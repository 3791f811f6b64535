"""`idsync demo`, the README's first command, end to end on its embedded default topology: GAL
sync and person sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from idsync.demo import run_demo
from streams.config.topology import load_topology

pytestmark = pytest.mark.integration

TOPOLOGY = Path(__file__).resolve().parents[2] / "topology.yaml"


def test_the_demo_joins_adopts_updates_and_deletes(tmp_path: Path, capsys) -> None:
    assert run_demo(load_topology(TOPOLOGY), workdir=tmp_path) == 0
    out = capsys.readouterr().out
    assert "6 users, 5 people" in out and "was adopted" in out
    assert ("idsync demo: OK (5 contacts for 6 users, 1 adopted, 1 updated, 1 deleted; 2 sites: 1 title written "
            "to both, 1 member removed, 1 departed flagged)") in out
    # Person sync: the deleted user is still a member of its site, flagged.
    assert "barbara.liskov@forest-b.example" in out.split("Site members after the delete")[1]
    print(out)
