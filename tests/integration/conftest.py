from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from idsync.sample_data import ensure_ou
from tests.integration.gal import GalDeployment, deploy


@pytest.fixture
def gal(kafka_broker, directories, unique_name: str, tmp_path: Path, request) -> Iterator[GalDeployment]:
    """A GAL-sync deployment of this test's own; its workers are stopped afterwards.

    `@pytest.mark.streams(setting=value)` on a test overrides its topology's streams settings,
    `@pytest.mark.metaverse(section=...)` sets its metaverse section.
    """
    marker = request.node.get_closest_marker("streams")
    metaverse = request.node.get_closest_marker("metaverse")
    deployment = deploy(
        tmp_path, unique_name, kafka_broker, directories._asdict(),
        metaverse=metaverse.kwargs if metaverse else None, **(marker.kwargs if marker else {}),
    )
    try:
        yield deployment
    finally:
        deployment.stop_workers()


@pytest.fixture
def base(directories, unique_name: str) -> str:
    """A reader test's own OU in forest A (its base_dn), plus a sibling OU outside it."""
    base = f"ou={unique_name},{directories.forest_a.suffix}"
    with directories.forest_a.admin_connection(raise_exceptions=True) as connection:
        ensure_ou(connection, base)
        ensure_ou(connection, f"ou={unique_name}-outside,{directories.forest_a.suffix}")
    return base
