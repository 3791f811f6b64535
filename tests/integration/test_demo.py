"""`idsync demo`, the README's first command, end to end on its embedded default topology."""

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
    assert "idsync demo: OK (5 contacts for 6 users, 1 adopted, 1 updated, 1 deleted)" in out
