"""`idsync demo`: the embedded default, end to end on this machine.

Starts the Kafka broker and the OpenLDAP forests that topology.yaml describes, loads sample
users into the user forests (one person in both) and an old hand-made contact into the central
forest, runs the worker, and shows the contacts it creates, adopts, updates and deletes in the
central forest; with the topology's sites section, person sync too (idsync/demo_sites.py).
Everything it started is stopped before it returns.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import ldap3

from idsync import demo_sites
from idsync.rig import KafkaBroker, SlapdInstance
from idsync.rig.worker import WorkerProcess
from idsync.sample_data import HAND_MADE_CONTACT, SAMPLE_USERS, add_user, ensure_ou, persons
from streams.config.topology import Topology
from streams.events import ANCHOR_ATTRIBUTE

log = logging.getLogger(__name__)

SHOWN_ATTRIBUTES = ["displayName", "mail", "targetAddress", "msRTCSIP-PrimaryUserAddress", "msRTCSIP-UserEnabled"]


class DemoError(RuntimeError):
    pass


def run_demo(topology: Topology, *, workdir: Path | None = None, timeout: float = 90) -> int:
    with tempfile.TemporaryDirectory(prefix="idsync-demo-") as scratch, ExitStack() as servers:
        root = workdir or Path(scratch)
        env = _demo_passwords(topology)
        broker = KafkaBroker(root / "kafka", port=_single_port(topology.kafka.bootstrap_servers))
        servers.callback(broker.stop)
        broker.start()
        forests = {}
        for forest in topology.forests:
            instance = SlapdInstance(
                root / "ldap",
                name=forest.name,
                suffix=forest.base_dn,
                port=urlsplit(forest.url).port,
                admin_password=env[forest.password.env],
            )
            servers.callback(instance.stop)
            forests[forest.name] = instance.start()

        created = _load_samples(topology, forests)
        central = forests[topology.central.name]
        hand_made = _add_hand_made_contact(topology, central)
        site_store = demo_sites.prepare(topology) if topology.sites is not None else None
        if site_store is not None:
            servers.callback(site_store.close)
        worker = WorkerProcess(topology.source, log_path=root / "worker.log", env=env)
        servers.callback(worker.stop)
        worker.start()

        people = persons(SAMPLE_USERS)
        contacts = _wait_for(central, topology, lambda found: len(found) == people, worker, timeout)
        _print_contacts(f"{len(created)} users, {people} people: contacts in the central forest", contacts)
        if _contact_count(central, topology) != people:
            raise DemoError(f"the hand-made contact {hand_made} was doubled instead of adopted")
        print(f"\nThe hand-made {hand_made} was adopted (renamed, its anchor added), not doubled.")
        if site_store is not None:
            demo_sites.show(site_store, topology, worker, forests, created[0][1], timeout)

        renamed_dn, renamed_name = _rename_first_user(forests, created)
        deleted_dn = _delete_last_user(forests, created)
        contacts = _wait_for(
            central,
            topology,
            lambda found: len(found) == people - 1
            and any(_values(e, "displayName") == [renamed_name] for e in found),
            worker,
            timeout,
        )
        print(f"\nChanged displayName of {renamed_dn} to {renamed_name!r}; deleted {deleted_dn}.")
        _print_contacts("Contacts after the update and the delete", contacts)
        sites = ""
        if site_store is not None:
            demo_sites.show_departed(site_store, topology, worker, timeout)
            sites = f"; {len(demo_sites.SITES)} sites: 1 title written to both, 1 member removed, 1 departed flagged"
        print(f"\nidsync demo: OK ({people} contacts for {len(created)} users, 1 adopted, 1 updated, 1 deleted{sites})")
        return 0


def _demo_passwords(topology: Topology) -> dict[str, str]:
    env = {}
    for forest in topology.forests:
        if forest.password.env is None:
            raise DemoError(f"forest {forest.name}: the demo sets passwords through password_env")
        if forest.bind_dn.lower() != f"cn=admin,{forest.base_dn}".lower():
            raise DemoError(f"forest {forest.name}: the demo's directories bind as cn=admin,<base_dn>")
        env[forest.password.env] = secrets.token_urlsafe(18)
    return env


def _single_port(bootstrap_servers: str) -> int:
    host_port = bootstrap_servers.split(",")
    if len(host_port) != 1:
        raise DemoError("the demo runs one local broker: give a single bootstrap server")
    return int(host_port[0].rsplit(":", 1)[1])


def _load_samples(topology: Topology, forests: dict[str, SlapdInstance]) -> list[tuple[str, str]]:
    created = []
    for forest in topology.user_forests:
        people = f"ou=people,{forest.base_dn}"
        with forests[forest.name].admin_connection(raise_exceptions=True) as connection:
            ensure_ou(connection, people)
            for user in SAMPLE_USERS.get(forest.name, ()):
                created.append((forest.name, add_user(connection, people, user)))
                print(f"added user {created[-1][1]} in {forest.name}")
    return created


def _add_hand_made_contact(topology: Topology, central: SlapdInstance) -> str:
    ou = topology.user_forests[0].contacts_ou
    dn = f"cn={ldap3.utils.dn.escape_rdn(HAND_MADE_CONTACT['cn'])},{ou}"
    with central.admin_connection(raise_exceptions=True) as connection:
        parent = ou.split(",", 1)[1]
        ensure_ou(connection, parent)
        ensure_ou(connection, ou)
        connection.add(dn, ["top", "person", "organizationalPerson", "contact"], HAND_MADE_CONTACT)
    print(f"added hand-made contact {dn} in {topology.central.name}")
    return dn


def _contact_count(central: SlapdInstance, topology: Topology) -> int:
    with central.admin_connection() as connection:
        connection.search(topology.central.base_dn, "(objectClass=contact)", attributes=["1.1"])
        return sum(1 for e in connection.response if e.get("type") == "searchResEntry")


def _rename_first_user(forests: dict[str, SlapdInstance], created: list[tuple[str, str]]) -> tuple[str, str]:
    forest, dn = created[0]
    new_name = "Augusta Ada King"
    with forests[forest].admin_connection() as connection:
        connection.modify(dn, {"displayName": [(ldap3.MODIFY_REPLACE, [new_name])]})
    return dn, new_name


def _delete_last_user(forests: dict[str, SlapdInstance], created: list[tuple[str, str]]) -> str:
    forest, dn = created[-1]
    with forests[forest].admin_connection() as connection:
        connection.delete(dn)
    return dn


def _wait_for(central: SlapdInstance, topology: Topology, done, worker: WorkerProcess, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        with central.admin_connection() as connection:
            connection.search(
                topology.central.base_dn,
                f"({ANCHOR_ATTRIBUTE}=*)",
                attributes=SHOWN_ATTRIBUTES,
            )
            found = [dict(e) for e in connection.response if e.get("type") == "searchResEntry"]
        if done(found):
            return found
        if not worker.running:
            raise DemoError(f"the worker exited (code {worker.returncode}); see {worker.log_path}")
        if time.monotonic() > deadline:
            raise DemoError(f"contacts did not converge within {timeout:.0f}s; see {worker.log_path}")
        time.sleep(0.2)


def _print_contacts(title: str, contacts: list[dict]) -> None:
    print(f"\n{title}:")
    for entry in sorted(contacts, key=lambda e: e["dn"]):
        print(f"  {entry['dn']}")
        for name in SHOWN_ATTRIBUTES:
            if values := _values(entry, name):
                print(f"      {name}: {', '.join(values)}")


def _values(entry: dict, name: str) -> list[str]:
    """Values as the directory holds them (ldap3 would turn TRUE into True)."""
    return [v.decode() for v in entry["raw_attributes"].get(name, [])]
