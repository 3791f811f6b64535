"""The worker's status page, opened in headless Chromium: it loads, shows the figures the test
expects, logs no console error, and leaves a screenshot for a person to look at."""

from __future__ import annotations

import re
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from idsync.rig.ports import free_port
from tests.integration.gal import GalDeployment, deploy, eventually
from tests.integration.test_ldap_tls import contact, worker_log

pytestmark = pytest.mark.integration
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "status-page.png"


@pytest.fixture
def deployments() -> Iterator[list[GalDeployment]]:
    made: list[GalDeployment] = []
    yield made
    for deployment in made:
        deployment.stop_workers()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed (docker/bootstrap.sh installs it)"
    return subprocess.run([binary, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
                           *args], capture_output=True, text=True, timeout=120, check=True)


def test_the_status_page_in_chromium(deployments, kafka_broker, directories, unique_name, tmp_path) -> None:
    port = free_port()
    gal = deploy(tmp_path, unique_name, kafka_broker, directories._asdict(), metrics={"listen": f"127.0.0.1:{port}"})
    deployments.append(gal)
    gal.add_user("forest_a", "ada", displayName="Ada", mail="ada@a.test")
    gal.start_worker()
    eventually(lambda: contact(gal, "forest_a", "ada"), timeout=60, what="the contact")
    base = f"http://127.0.0.1:{port}"
    assert get(base + "/healthz") == (200, "ok\n")
    eventually(lambda: get(base + "/readyz") == (200, "ready\n"), timeout=30, what="ready")
    metrics = get(base + "/metrics")[1]
    assert re.search(r'^idsync_sink_latency_seconds_count\{sink="central"\} [1-9]', metrics, re.M), metrics
    assert re.search(r'^idsync_stage_records_total\{stage="contact-writer"\} [1-9]', metrics, re.M)
    for _ in range(3):  # lag samples for the chart
        assert get(base + "/status")[0] == 200

    dom = chromium("--dump-dom", base + "/status")
    text = " ".join(re.sub(r"<[^>]+>", " ", dom.stdout).split())
    for forest in ("central", "forest-a", "forest-b"):
        assert re.search(rf"{forest} \S+ up", text), text
    group = gal.topology.streams.app_id
    assert re.search(rf"{re.escape(group)} \d+ [\d.]+ s", text), text
    assert "Open conflicts (0)" in text and "Held deletes (0)" in text and "contact writer - up" in text
    assert "<polyline" in dom.stdout
    assert ":CONSOLE(" not in dom.stderr, dom.stderr

    screenshot = tmp_path / "status-page.png"
    shot = chromium(f"--screenshot={screenshot}", "--window-size=1280,900", base + "/status")
    assert screenshot.stat().st_size > 10_000, shot.stderr
    assert ":CONSOLE(" not in shot.stderr, shot.stderr
    if os.environ.get("IDSYNC_UPDATE_DOCS"):  # README's picture, refreshed on request only
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)
    assert "Traceback" not in worker_log(gal)
