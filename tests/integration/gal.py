"""A GAL-sync deployment for one test: its own topics, consumer groups and OUs on the shared servers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TypeVar

import ldap3
import yaml

from idsync.rig import KafkaBroker, SlapdInstance
from idsync.rig.worker import WorkerProcess
from idsync.sample_data import ensure_ou
from streams.config.metaverse import engine_settings
from streams.config.topology import Topology, load_topology
from streams.kafka.lag import consumer_lag

T = TypeVar("T")
FOREST_NAMES = {"central": "central", "forest_a": "forest-a", "forest_b": "forest-b"}
# Both OpenLDAP readers run in every end-to-end test: forest-b is pushed, the others polled.
DEFAULT_MODES = {"central": "accesslog-poll", "forest_a": "accesslog-poll", "forest_b": "accesslog-sync"}


def eventually(probe: Callable[[], T], *, timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll until `probe` returns something truthy; fail with the last value after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last value: {value!r}")
        time.sleep(interval)


def entries(directory: SlapdInstance, base: str, search_filter: str = "(objectClass=*)", attributes=("*", "+")) -> dict[str, dict[str, list[str]]]:
    """{dn: {lower-cased attribute: [values as stored]}} under `base` (subtree)."""
    with directory.admin_connection() as connection:
        connection.search(base, search_filter, attributes=list(attributes))
        return {
            e["dn"]: {name.lower(): [v.decode() for v in values] for name, values in e["raw_attributes"].items()}
            for e in connection.response
            if e.get("type") == "searchResEntry"
        }


@dataclass
class GalDeployment:
    name: str
    workdir: Path
    broker: KafkaBroker
    directories: dict[str, SlapdInstance]
    topology: Topology
    env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def central_base(self) -> str:
        return self.topology.central.base_dn

    def people(self, forest: str) -> str:
        return self.topology.forest(FOREST_NAMES[forest]).base_dn

    def contacts_ou(self, forest: str) -> str:
        return self.topology.forest(FOREST_NAMES[forest]).contacts_ou

    def start_worker(self, components: str | None = None, state_of: WorkerProcess | None = None) -> WorkerProcess:
        """A new worker process; `state_of`: on the tables another (stopped) worker left on disk."""
        worker = WorkerProcess(
            self.topology.source, log_path=self.workdir / f"worker-{len(self.workers)}.log", env=self.env,
            components=components, state_dir=state_of.state_dir if state_of is not None else None,
        )
        self.workers.append(worker.start())
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    def idsync(self, *args: str) -> str:
        """Run the idsync command against this deployment; its output, or a failure with it."""
        done = subprocess.run(
            [sys.executable, "-m", "idsync.cli", *args, "--topology", str(self.topology.source)],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"idsync {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        return done.stdout

    def connection(self, forest: str) -> ldap3.Connection:
        return self.directories[forest].admin_connection(raise_exceptions=True)

    def add_user(self, forest: str, uid: str, **attributes: str) -> str:
        dn = f"uid={ldap3.utils.dn.escape_rdn(uid)},{self.people(forest)}"
        values = {"uid": uid, "cn": uid, "sn": uid, "mail": f"{uid}@{forest}.test"} | attributes
        with self.connection(forest) as connection:
            connection.add(dn, ["top", "person", "organizationalPerson", "inetOrgPerson"], values)
        return dn

    def add_entry(self, forest: str, rdn: str, object_classes: list[str], **attributes) -> str:
        """Any entry directly below the forest's base (for the central forest: its base OU)."""
        base = self.central_base if forest == "central" else self.people(forest)
        dn = f"{rdn},{base}"
        with self.connection(forest) as connection:
            connection.add(dn, object_classes, attributes)
        return dn

    def add_group(self, forest: str, cn: str, **attributes: str) -> str:
        """A mail-enabled group (groupOfNames needs a member: the forest's base entry stands in)."""
        values = {"cn": cn, "member": self.people(forest)} | attributes
        return self.add_entry(forest, f"cn={cn}", ["top", "groupOfNames", "idsyncMailRecipient"], **values)

    def add_contact(self, forest: str, cn: str, ou: str | None = None, **attributes: str) -> str:
        """A contact entry; in the central forest below `ou` (default: the central base OU)."""
        values = {"cn": cn, "sn": cn} | attributes
        if ou is not None:
            dn = f"cn={ldap3.utils.dn.escape_rdn(cn)},{ou}"
            with self.connection(forest) as connection:
                ensure_ou(connection, ou)
                connection.add(dn, ["top", "person", "organizationalPerson", "contact"], values)
            return dn
        return self.add_entry(forest, f"cn={ldap3.utils.dn.escape_rdn(cn)}", ["top", "person", "organizationalPerson", "contact"], **values)

    def modify(self, forest: str, dn: str, **replace: str) -> None:
        with self.connection(forest) as connection:
            connection.modify(dn, {name: [(ldap3.MODIFY_REPLACE, [value])] for name, value in replace.items()})

    def delete(self, forest: str, dn: str) -> None:
        with self.connection(forest) as connection:
            connection.delete(dn)

    def contacts(self, forest: str | None = None) -> dict[str, dict[str, list[str]]]:
        base = self.contacts_ou(forest) if forest else self.central_base
        try:
            return entries(self.directories["central"], base, "(idsyncAnchor=*)")
        except ldap3.core.exceptions.LDAPNoSuchObjectResult:
            return {}

    def wait_until_processed(self, timeout: float = 30) -> None:
        """Every change and contact state so far is committed by the processor and the sink."""
        kafka = self.topology.kafka
        topics = engine_settings(self.topology).topics
        groups = (
            *((self.topology.streams.app_id, topic) for topic in topics.consumed()),
            (f"{self.topology.streams.app_id}-contact-writer", kafka.topics.contacts),
            *((f"{self.topology.streams.app_id}-site-writer-{store.name}", kafka.topics.site_writes)
              for store in (self.topology.sites.stores if self.topology.sites is not None else ())),
        )

        lags: dict[tuple[str, str], dict] = {}

        def settled() -> bool:
            for group, topic in groups:
                lags[group, topic] = asyncio.run(consumer_lag(kafka, group, topic))
            return not any(sum(lag.values()) for lag in lags.values())

        try:
            eventually(settled, timeout=timeout, interval=0.3, what="zero consumer lag")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; lag by group: {lags}") from None


def write_topology(
    workdir: Path,
    name: str,
    broker: KafkaBroker,
    directories: dict[str, SlapdInstance],
    streams: dict,
    change_capture: Mapping[str, Mapping[str, object]] | None = None,
    metaverse: Mapping[str, object] | None = None,
    forest_settings: Mapping[str, Mapping[str, object]] | None = None,
    kafka_settings: Mapping[str, object] | None = None,
    metrics: Mapping[str, object] | None = None,
    sites: Mapping[str, object] | None = None,
) -> tuple[Path, dict[str, str]]:
    """A topology for this test only: OUs, topics and group ids all carry `name`.

    `change_capture` overrides change-capture settings per directory key (e.g. "forest_a"),
    `forest_settings` other keys of a forest (e.g. its url and tls), `kafka_settings` keys of
    the kafka section (e.g. bootstrap_servers and security_protocol).
    """
    env, forests = {}, []
    central_base = f"ou={name},{directories['central'].suffix}"
    for key, instance in directories.items():
        forest_name = FOREST_NAMES[key]
        variable = f"IDSYNC_TEST_{key.upper()}_PASSWORD"
        env[variable] = instance.admin_password
        base = central_base if key == "central" else f"ou={name},{instance.suffix}"
        with instance.admin_connection(raise_exceptions=True) as connection:
            ensure_ou(connection, base)
        forest = {
            "name": forest_name,
            "role": "central" if key == "central" else "user",
            "url": instance.url,
            "base_dn": base,
            "bind_dn": instance.admin_dn,
            "password_env": variable,
            "change_capture": {"mode": DEFAULT_MODES[key], "poll_interval_seconds": 0.1, "overlap_seconds": 2.0}
            | dict((change_capture or {}).get(key, {})),
        } | dict((forest_settings or {}).get(key, {}))
        if key != "central":
            forest["contacts_ou"] = f"ou={forest_name},{central_base}"
        forests.append(forest)
    document = {
        "kafka": {
            "bootstrap_servers": broker.bootstrap_servers,
            "partitions": 3,
            "topics": {
                "changes": f"{name}.changes",
                "positions": f"{name}.positions",
                "contacts": f"{name}.contacts",
                "errors": f"{name}.errors",
                "conflicts": f"{name}.conflicts",
                "held_deletes": f"{name}.held-deletes",
                "site_changes": f"{name}.site-changes",
                "site_writes": f"{name}.site-writes",
            },
        } | dict(kafka_settings or {}),
        "streams": {"app_id": name, "commit_interval_seconds": 0.2} | streams,
        "forests": forests,
        "contacts": {
            "attributes": {
                "displayName": "{displayName}",
                "sn": "{sn|cn}",
                "mail": "{mail}",
                "targetAddress": "SMTP:{mail}",
                "msRTCSIP-PrimaryUserAddress": "sip:{mail}",
                "msRTCSIP-UserEnabled": "TRUE",
            }
        },
    }
    if metaverse:
        document["metaverse"] = dict(metaverse)
    if metrics is not None:
        document["metrics"] = dict(metrics)
    if sites is not None:
        document["sites"] = dict(sites)
    path = workdir / "topology.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path, env


def deploy(
    workdir: Path,
    name: str,
    broker: KafkaBroker,
    directories: dict[str, SlapdInstance],
    *,
    change_capture: Mapping[str, Mapping[str, object]] | None = None,
    metaverse: Mapping[str, object] | None = None,
    forest_settings: Mapping[str, Mapping[str, object]] | None = None,
    kafka_settings: Mapping[str, object] | None = None,
    metrics: Mapping[str, object] | None = None,
    sites: Mapping[str, object] | None = None,
    **streams: object,
) -> GalDeployment:
    """`streams` overrides settings of the topology's streams section for this deployment;
    `change_capture` those of a forest's change capture, by directory key; `metaverse` is the
    topology's metaverse section; `forest_settings` other keys of a forest, by directory key;
    `kafka_settings` keys of the kafka section; `metrics` the metrics section."""
    path, env = write_topology(
        workdir, name, broker, directories, streams, change_capture, metaverse, forest_settings, kafka_settings,
        metrics, sites,
    )
    return GalDeployment(
        name=name, workdir=workdir, broker=broker, directories=directories, topology=load_topology(path), env=env
    )
