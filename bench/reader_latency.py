"""Change-to-read latency and backlog throughput of the OpenLDAP readers, push against poll.

Each run starts a slapd of its own (the rig's), so runs are independent repetitions on a log of
the same small size, then measures each reader in turn, alone:
- latency: a thread writes modifies at a steady rate while the reader follows; a change's
  latency is from just before its modify was sent until read() returned it;
- backlog: with no reader running, modifies are written as fast as one connection goes, then the
  reader reads them from the position it had taken just before.
Prints each run and the medians over runs. Measurements only: nothing here asserts a bound.
A subtree search of cn=accesslog costs slapd (back-mdb) time in proportion to the log, whatever
the filter, even an indexed equality (measured: ~8 ms on an empty log, 35-50 ms at 40,000 records;
a base search stays ~7 ms). The poll reader reads only the suffix entry's contextCSN while idle
and searches the log when it moved: a fresh log is its best case.

    .venv/bin/python bench/reader_latency.py [--runs 5] [--changes 300] [--rate 50] [--backlog 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ldap3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.openldap.accesslog_poll import AccesslogPollReader  # noqa: E402
from connectors.openldap.syncrepl import AccesslogSyncReader  # noqa: E402
from idsync.rig import SlapdInstance  # noqa: E402
from idsync.rig.forests import reader_forest  # noqa: E402
from idsync.sample_data import ensure_ou  # noqa: E402
from streams.config.forests import Forest  # noqa: E402

USERS = 10


@dataclass
class Run:
    p50_ms: dict[str, float]
    p99_ms: dict[str, float]
    backlog_per_second: dict[str, float]


def forest(instance: SlapdInstance, base: str, password_file: Path, mode: str, poll_interval: float) -> Forest:
    return reader_forest(instance, base, password_file, name="bench", mode=mode, poll_interval_seconds=poll_interval)


def tag_of(change) -> str | None:
    """The description value a bench modify wrote, or None for any other change."""
    for modification in change.modifications:
        if modification.attribute == "description" and modification.values:
            return modification.values[0]
    return None


async def follow(reader, position: str, wanted: set[str], seen_at: dict[str, float], timeout: float) -> str:
    """Read until every tag in `wanted` was returned; note when each one was."""
    deadline = time.monotonic() + timeout
    while wanted - seen_at.keys():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{reader.mode}: {len(wanted - seen_at.keys())} of {len(wanted)} changes never read")
        batch = await reader.read(position)
        now = time.perf_counter()
        for change in batch.changes:
            tag = tag_of(change)
            if tag in wanted and tag not in seen_at:
                seen_at[tag] = now
        position = batch.position
    return position


def write(instance: SlapdInstance, users: list[str], tags: list[str], rate: float | None, sent_at: dict[str, float]) -> None:
    with instance.admin_connection(raise_exceptions=True) as connection:
        start = time.perf_counter()
        for n, tag in enumerate(tags):
            if rate:
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            sent_at[tag] = time.perf_counter()
            connection.modify(users[n % len(users)], {"description": [(ldap3.MODIFY_REPLACE, [tag])]})


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


READERS = {"accesslog-sync": AccesslogSyncReader, "accesslog-poll": AccesslogPollReader}


async def measure(mode: str, instance: SlapdInstance, config: Forest, args: argparse.Namespace, users: list[str]) -> tuple[list[float], float]:
    """One reader: its change-to-read latencies (ms), then its backlog throughput (changes/s)."""
    reader = READERS[mode](config)
    position = (await reader.read(None)).position
    # Caught up first: the poll reader re-reads its overlap window, which may hold the previous
    # reader's backlog, and that is not what this measures.
    while (batch := await reader.read(position)).changes:
        position = batch.position
    tags = [f"{mode}-live-{n}" for n in range(args.changes)]
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    writer = threading.Thread(target=write, args=(instance, users, tags, args.rate, sent_at))
    writer.start()
    try:
        position = await follow(reader, position, set(tags), seen_at, timeout=60)
    finally:
        await asyncio.to_thread(writer.join)
        await reader.close()
    latencies = [(seen_at[tag] - sent_at[tag]) * 1000 for tag in tags]

    backlog = [f"{mode}-backlog-{n}" for n in range(args.backlog)]
    await asyncio.to_thread(write, instance, users, backlog, None, {})
    reader = READERS[mode](config)
    try:
        started = time.perf_counter()
        await follow(reader, position, set(backlog), {}, timeout=120)
        throughput = len(backlog) / (time.perf_counter() - started)
    finally:
        await reader.close()
    return latencies, throughput


async def one_run(number: int, args: argparse.Namespace) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix="idsync-bench-"))
    instance = SlapdInstance(workdir, name="bench", suffix="dc=bench,dc=idsync,dc=test", admin_password=secrets.token_urlsafe(16))
    instance.start()
    try:
        base = f"ou=people,{instance.suffix}"
        with instance.admin_connection(raise_exceptions=True) as connection:
            ensure_ou(connection, base)
            users = []
            for n in range(USERS):
                dn = f"uid=bench{n},{base}"
                connection.add(dn, ["inetOrgPerson"], {"uid": f"bench{n}", "cn": f"bench{n}", "sn": "bench"})
                users.append(dn)
        password_file = workdir / "password"
        password_file.write_text(instance.admin_password)
        run = Run(p50_ms={}, p99_ms={}, backlog_per_second={})
        for mode in READERS:
            latencies, throughput = await measure(mode, instance, forest(instance, base, password_file, mode, args.poll_interval), args, users)
            run.p50_ms[mode] = statistics.median(latencies)
            run.p99_ms[mode] = percentile(latencies, 0.99)
            run.backlog_per_second[mode] = throughput
            print(
                f"run {number}  {mode:15s} p50 {run.p50_ms[mode]:7.1f} ms  p99 {run.p99_ms[mode]:7.1f} ms  "
                f"backlog {throughput:8.0f} changes/s",
                flush=True,
            )
        return run
    finally:
        instance.stop()


async def main(args: argparse.Namespace) -> None:
    print(
        f"{args.runs} runs; latency: {args.changes} modifies at {args.rate}/s; backlog: {args.backlog} modifies; "
        f"poll interval {args.poll_interval}s",
        flush=True,
    )
    runs = [await one_run(number, args) for number in range(1, args.runs + 1)]
    print(f"\nmedians over {len(runs)} runs")
    print(f"{'reader':15s} {'p50 ms':>8s} {'p99 ms':>8s} {'backlog changes/s':>18s}")
    for mode in READERS:
        p50 = statistics.median(run.p50_ms[mode] for run in runs)
        p99 = statistics.median(run.p99_ms[mode] for run in runs)
        rate = statistics.median(run.backlog_per_second[mode] for run in runs)
        print(f"{mode:15s} {p50:8.1f} {p99:8.1f} {rate:18.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--changes", type=int, default=300, help="modifies per run for the latency measurement")
    parser.add_argument("--rate", type=float, default=50.0, help="modifies per second for the latency measurement")
    parser.add_argument("--backlog", type=int, default=3000, help="modifies written while no reader runs")
    parser.add_argument("--poll-interval", type=float, default=0.1, help="the poll reader's interval, seconds")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))
