"""idsync under benchmark: its topology file, its worker, its resync command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from idsync.rig import KafkaBroker, SlapdInstance
from idsync.rig.worker import WorkerProcess
from idsync.sample_data import ensure_ou

CAPTURE = {"mode": "accesslog-sync", "poll_interval_seconds": 0.2, "overlap_seconds": 2.0,
           "accesslog_base": "cn=accesslog"}
CONTACT_ATTRIBUTES = {"displayName": "{displayName}", "sn": "{sn}", "givenName": "{givenName}", "mail": "{mail}",
                      "msRTCSIP-PrimaryUserAddress": "sip:{mail}", "msRTCSIP-UserEnabled": "TRUE"}


def password_env(name: str) -> str:
    return f"BENCH_{name.upper().replace('-', '_')}_PASSWORD"


def contacts_base(central: SlapdInstance) -> str:
    return f"ou=gal-contacts,ou=idsync,{central.suffix}"


def write_topology(workdir: Path, run: str, broker: KafkaBroker, central: SlapdInstance,
                   users: Sequence[SlapdInstance]) -> tuple[Path, dict[str, str]]:
    """The topology file (idsync owns ou=idsync of the central forest; the direct writes of the
    floor go elsewhere) and the environment holding the passwords."""
    base = f"ou=idsync,{central.suffix}"
    with central.admin_connection(raise_exceptions=True) as connection:
        ensure_ou(connection, base)
        ensure_ou(connection, contacts_base(central))
    forests = [{"name": "central", "role": "central", "url": central.url, "base_dn": base,
                "bind_dn": central.admin_dn, "password_env": password_env("central"), "change_capture": CAPTURE}]
    for forest in users:
        forests.append({"name": forest.name, "role": "user", "url": forest.url, "base_dn": forest.suffix,
                        "bind_dn": forest.admin_dn, "password_env": password_env(forest.name),
                        "contacts_ou": f"ou={forest.name},{contacts_base(central)}", "change_capture": CAPTURE})
    document = {
        "kafka": {"bootstrap_servers": broker.bootstrap_servers, "partitions": 3,
                  "topics": {name: f"{run}.{name}" for name in ("changes", "positions", "contacts", "errors")}},
        "streams": {"app_id": run, "commit_interval_seconds": 1.0},
        "forests": forests,
        "contacts": {"attributes": CONTACT_ATTRIBUTES},
        # No delete breaker in the way of the benchmark's wipe-and-resync.
        "metaverse": {"delete_breaker": {"limit": 1_000_000, "window_seconds": 60}},
    }
    path = workdir / f"{run}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    env = {password_env(server.name): server.admin_password for server in (central, *users)}
    env[password_env("central")] = central.admin_password
    return path, env


def start_worker(topology: Path, env: dict[str, str]) -> WorkerProcess:
    worker = WorkerProcess(topology, log_path=topology.parent / "worker.log", env=env)
    return worker.start()


def worker_pid(worker: WorkerProcess) -> int | None:
    return worker.pid if worker.running else None


@dataclass(frozen=True, slots=True)
class CommandRun:
    seconds: float
    returncode: int
    peak_rss_mb: float
    cpu_seconds: float
    output: str


def run_resync(topology: Path, env: dict[str, str], log_path: Path) -> CommandRun:
    """`idsync resync` to its end, with its peak RSS and CPU seconds (os.wait4's rusage)."""
    started = time.perf_counter()
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "idsync.cli", "resync", "--topology", str(topology)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                   env={**os.environ, **env}, cwd=topology.parent)
        output = process.stdout.read().decode(errors="replace")
        _, status, rusage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return CommandRun(seconds=time.perf_counter() - started, returncode=process.returncode,
                      peak_rss_mb=rusage.ru_maxrss / 1024, cpu_seconds=rusage.ru_utime + rusage.ru_stime,
                      output=output)
