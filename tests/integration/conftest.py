from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.gal import GalDeployment, deploy


@pytest.fixture
def gal(kafka_broker, directories, unique_name: str, tmp_path: Path) -> Iterator[GalDeployment]:
    """A GAL-sync deployment of this test's own; its workers are stopped afterwards."""
    deployment = deploy(tmp_path, unique_name, kafka_broker, directories._asdict())
    try:
        yield deployment
    finally:
        deployment.stop_workers()
