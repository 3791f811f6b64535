"""The workload: N users over the user forests, displayName modifications at a fixed rate, and the
direct ldap3 writes of the same contacts (the floor any sink stands on).

Writers run in processes of their own (fork), so the benchmark's watcher threads and the writers
do not share one interpreter lock. Times are time.perf_counter() (CLOCK_MONOTONIC, the same in
every process of this machine).
"""

from __future__ import annotations

import math
import multiprocessing
import time
from dataclasses import dataclass
from typing import Sequence

import ldap3

from idsync.rig.admin import admin_connection
from idsync.sample_data import ensure_ou

USER_CLASSES = ["top", "person", "organizationalPerson", "inetOrgPerson"]
CONTACT_CLASSES = ["top", "person", "organizationalPerson", "contact"]
_CONTEXT = multiprocessing.get_context("fork")


@dataclass(frozen=True, slots=True)
class Directory:
    """Where to write, picklable: what a writer process needs of a SlapdInstance."""

    url: str
    admin_dn: str
    admin_password: str
    people_ou: str
    domain: str


def user_dn(directory: Directory, index: int) -> str:
    return f"uid=u{index:07d},{directory.people_ou}"


def user_attributes(directory: Directory, index: int) -> dict[str, str]:
    name = f"u{index:07d}"
    return {"uid": name, "cn": f"User {index:07d}", "sn": f"Surname{index}", "givenName": "User",
            "displayName": f"User {index:07d}", "mail": f"{name}@{directory.domain}"}


def split(users: int, forests: int) -> list[range]:
    """Global user indexes per forest: as even as can be, in order."""
    size = math.ceil(users / forests)
    return [range(start, min(users, start + size)) for start in range(0, users, size)][:forests]


def _connect(directory: Directory):
    return admin_connection(directory.url, directory.admin_dn, directory.admin_password, server_name=directory.url,
                            raise_exceptions=True)


def _load(directory: Directory, indexes: range) -> None:
    with _connect(directory) as connection:
        ensure_ou(connection, directory.people_ou)
        for index in indexes:
            connection.add(user_dn(directory, index), USER_CLASSES, user_attributes(directory, index))


def load_users(directories: Sequence[Directory], users: int) -> list[range]:
    """Add the users, each forest by a process of its own; returns each forest's indexes."""
    shares = split(users, len(directories))
    _run_all([(_load, (directory, share)) for directory, share in zip(directories, shares)])
    return shares


def _run_all(jobs: list) -> None:
    processes = [_CONTEXT.Process(target=target, args=args, daemon=True) for target, args in jobs]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [p.exitcode for p in processes if p.exitcode]
    if failed:
        raise RuntimeError(f"a writer process failed (exit codes {failed})")


def _modify(targets: list[tuple[Directory, str, str, float]], queue) -> None:
    """Each (directory, dn, tag, when): at `when`, replace dn's displayName by `tag`; report
    (tag, the moment before it was sent, the moment it returned) of each."""
    sent: list[tuple[str, float, float]] = []
    connections, opened = {}, []
    try:
        for directory, *_ in targets:
            if directory.url not in connections:
                opened.append(_connect(directory))
                connections[directory.url] = opened[-1].__enter__()
        for directory, dn, tag, when in targets:
            if (delay := when - time.perf_counter()) > 0:
                time.sleep(delay)
            before = time.perf_counter()
            connections[directory.url].modify(dn, {"displayName": [(ldap3.MODIFY_REPLACE, [tag])]})
            sent.append((tag, before, time.perf_counter()))
    finally:
        for context in opened:
            context.__exit__(None, None, None)
        queue.put(sent)


def modify_at_rate(directories: Sequence[Directory], shares: Sequence[range], rate: float, seconds: float,
                   label: str, writers: int) -> dict[str, tuple[float, float]]:
    """rate*seconds displayName modifications, round robin over the users of every forest, spread
    over `writers` processes; tag -> (the moment its modify was sent, the moment it returned)."""
    count = max(1, round(rate * seconds))
    people = [(directory, index) for directory, share in zip(directories, shares) for index in share]
    people.sort(key=lambda pair: pair[1])
    start = time.perf_counter() + 0.5
    plan = [(people[n % len(people)][0], user_dn(*people[n % len(people)]), f"{label}-{n}", start + n / rate)
            for n in range(count)]
    queue = _CONTEXT.Queue()
    processes = [_CONTEXT.Process(target=_modify, args=(plan[w::writers], queue), daemon=True) for w in range(writers)]
    for process in processes:
        process.start()
    sent: dict[str, tuple[float, float]] = {}
    for _ in processes:
        sent.update((tag, (before, after)) for tag, before, after in queue.get())
    for process in processes:
        process.join()
    return sent


def contact_attributes(directory: Directory, index: int, anchor: str) -> dict[str, str]:
    user = user_attributes(directory, index)
    return {"cn": user["cn"], "sn": user["sn"], "givenName": user["givenName"], "displayName": user["displayName"],
            "mail": user["mail"], "msRTCSIP-PrimaryUserAddress": f"sip:{user['mail']}",
            "msRTCSIP-UserEnabled": "TRUE", "idsyncAnchor": anchor}


def _write_contacts(central: Directory, sources: list[tuple[Directory, int]]) -> None:
    with _connect(central) as connection:
        for directory, index in sources:
            attributes = contact_attributes(directory, index, f"direct-{index}")
            connection.add(f"cn={attributes['cn']},{central.people_ou}", CONTACT_CLASSES, attributes)


def direct_writes(central: Directory, directories: Sequence[Directory], shares: Sequence[range],
                  connections: int) -> float:
    """Seconds to add every user's contact straight to `central.people_ou` over `connections`
    connections (one process each)."""
    with _connect(central) as connection:
        ensure_ou(connection, central.people_ou)
    sources = [(directory, index) for directory, share in zip(directories, shares) for index in share]
    started = time.perf_counter()
    _run_all([(_write_contacts, (central, sources[n::connections])) for n in range(connections)])
    return time.perf_counter() - started


def delete_below(directory: Directory, base: str, search_filter: str) -> int:
    """Delete every entry below `base` matching the filter (leaves only); returns how many."""
    with _connect(directory) as connection:
        entries = connection.extend.standard.paged_search(base, search_filter, attributes=["1.1"], generator=False)
        dns = [entry["dn"] for entry in entries if entry.get("type") == "searchResEntry"]
        for dn in dns:
            connection.delete(dn)
    return len(dns)
