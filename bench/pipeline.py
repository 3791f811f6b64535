"""Throughput of the stream behind the readers: metaverse processor and contact writer.

Starts its own broker and central slapd (the rig's). Each run publishes N user adds straight
into a fresh changes topic (no reader involved), starts a worker, and measures the time until
every contact exists in the central forest. The reference, measured in the same run, is one
ldap3 connection adding the same N contacts directly: the floor any sink must stand on.
Prints each run and the medians. Measurements only: nothing here asserts a bound.

    .venv/bin/python bench/pipeline.py [--runs 3] [--users 1000] [--split]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.e2e.procstat import usage  # noqa: E402
from idsync.rig import KafkaBroker, SlapdInstance  # noqa: E402
from idsync.rig.worker import WorkerProcess  # noqa: E402
from idsync.sample_data import ensure_ou  # noqa: E402
from streams.config.topology import load_topology  # noqa: E402
from streams.events import ChangeOp, DirectoryChange, ObjectKind  # noqa: E402
from streams.kafka.topics import ensure_topics  # noqa: E402

CENTRAL_SUFFIX = "dc=central,dc=idsync,dc=test"


def topology_file(
    workdir: Path, run: str, broker: KafkaBroker, central: SlapdInstance, linger_ms: int | None = None
) -> Path:
    base = f"ou={run},{CENTRAL_SUFFIX}"
    with central.admin_connection(raise_exceptions=True) as connection:
        ensure_ou(connection, base)
        ensure_ou(connection, f"ou=unread,{base}")
    forest = {"bind_dn": central.admin_dn, "password_env": "BENCH_PASSWORD", "url": central.url}
    document = {
        "kafka": {"bootstrap_servers": broker.bootstrap_servers, "partitions": 3,
                  "topics": {name: f"{run}.{name}" for name in ("changes", "positions", "contacts", "errors")}},
        "streams": {"app_id": run, "commit_interval_seconds": 1.0,
                    **({"producer_linger_ms": linger_ms} if linger_ms is not None else {})},
        # The user forest is never read: its changes are published by the bench itself.
        "forests": [
            {"name": "central", "role": "central", "base_dn": base, **forest},
            {"name": "forest-a", "role": "user", "base_dn": f"ou=unread,{base}",
             "contacts_ou": f"ou=forest-a,{base}", **forest},
        ],
        "contacts": {"attributes": {"displayName": "{displayName}", "sn": "{sn}", "mail": "{mail}",
                                    "msRTCSIP-PrimaryUserAddress": "sip:{mail}", "msRTCSIP-UserEnabled": "TRUE"}},
    }
    path = workdir / f"{run}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def user_add(index: int) -> DirectoryChange:
    name = f"user{index:06d}"
    return DirectoryChange(
        forest="forest-a", object_id=f"bench-{index}", op=ChangeOp.ADD, kind=ObjectKind.USER,
        # Dated after any snapshot forest-a's reader takes of its empty OU: its sweep leaves them be.
        dn=f"uid={name},ou=people,dc=forest-a", position=f"29990101000000.{index:06d}Z",
        changed_at="2026-01-01T00:00:00Z",
        attributes={"objectClass": ("inetOrgPerson",), "cn": (name,), "sn": (name,),
                    "displayName": (f"User {index}",), "mail": (f"{name}@a.test",)},
    )


async def publish(bootstrap: str, topic: str, users: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for index in range(users):
            change = user_add(index)
            await producer.send(topic, key=change.key.encode(), value=change.to_bytes())
        await producer.flush()
    finally:
        await producer.stop()


def count_contacts(central: SlapdInstance, base: str) -> int:
    with central.admin_connection() as connection:
        entries = connection.extend.standard.paged_search(base, "(idsyncAnchor=*)", attributes=["1.1"], generator=False)
        return sum(1 for e in entries if e.get("type") == "searchResEntry")


def pipeline_seconds(
    workdir: Path, run: str, broker: KafkaBroker, central: SlapdInstance, users: int, split: bool = False,
    linger_ms: int | None = None,
) -> tuple[float, float]:
    """(seconds from worker start to the last contact, seconds from the first contact to the last)."""
    path = topology_file(workdir, run, broker, central, linger_ms)
    topology = load_topology(path)
    asyncio.run(ensure_topics(topology.kafka))
    asyncio.run(publish(broker.bootstrap_servers, topology.kafka.topics.changes, users))
    env = {"BENCH_PASSWORD": central.admin_password}
    plan = [("readers,processor", "processor"), ("sinks", "sinks")] if split else [(None, "all")]
    workers = [WorkerProcess(path, log_path=workdir / f"{run}-{name}.log", env=env, components=components)
               for components, name in plan]
    started = time.monotonic()
    first = None
    for worker in workers:
        worker.start()
    try:
        while (done := count_contacts(central, topology.forest("forest-a").contacts_ou)) < users:
            if done and first is None:
                first = time.monotonic()
            for worker in workers:
                if not worker.running:
                    raise RuntimeError(f"worker exited; see {worker.log_path}")
            # Counting searches every contact: done often, it costs the machine's two cores more
            # than a little (~0.3 core at 8,000 contacts), so between the first and the last few
            # percent it is done once a second.
            time.sleep(0.1 if not done or users - done < users * 0.05 else 1.0)
        finished = time.monotonic()
        for (_, name), worker in zip(plan, workers):
            if (used := usage(worker.pid)) is not None:
                print(f"  {name} worker: {used.cpu_seconds:.1f} CPU s, {1000 * used.cpu_seconds / users:.2f} ms a contact",
                      flush=True)
        return finished - started, finished - (first or finished)
    finally:
        for worker in workers:
            worker.stop()


def direct_seconds(central: SlapdInstance, run: str, users: int) -> float:
    base = f"ou={run}-direct,{CENTRAL_SUFFIX}"
    with central.admin_connection(raise_exceptions=True) as connection:
        ensure_ou(connection, base)
        started = time.monotonic()
        for index in range(users):
            change = user_add(index)
            name = change.attributes["cn"][0]
            connection.add(f"cn={name},{base}", ["top", "person", "organizationalPerson", "contact"],
                           {"sn": name, "displayName": change.attributes["displayName"][0],
                            "mail": change.attributes["mail"][0], "idsyncAnchor": change.key})
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--split", action="store_true",
                        help="run the processor and the sinks as two processes (idsync run --components)")
    parser.add_argument("--linger-ms", type=int, default=None,
                        help="the worker's streams.producer_linger_ms (default: the topology's default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    password = secrets.token_urlsafe(16)
    os.environ["BENCH_PASSWORD"] = password
    with tempfile.TemporaryDirectory(prefix="idsync-bench-") as scratch:
        workdir = Path(scratch)
        with KafkaBroker(workdir / "kafka") as broker, SlapdInstance(
            workdir, name="central", suffix=CENTRAL_SUFFIX, admin_password=password
        ) as central:
            total, flowing, direct = [], [], []
            for index in range(args.runs):
                run = f"bench{index}-{secrets.token_hex(2)}"
                direct.append(direct_seconds(central, run, args.users))
                whole, steady = pipeline_seconds(workdir, run, broker, central, args.users, args.split,
                                                 args.linger_ms)
                total.append(whole)
                flowing.append(steady)
                print(f"run {index}: worker start to last contact {whole:.2f}s, first to last contact {steady:.2f}s "
                      f"({args.users / steady:.0f} contacts/s); direct ldap3 adds {direct[-1]:.2f}s "
                      f"({args.users / direct[-1]:.0f}/s)", flush=True)
            t, f, d = statistics.median(total), statistics.median(flowing), statistics.median(direct)
            print(f"median over {args.runs} runs, {args.users} users: start to last contact {t:.2f}s; "
                  f"steady {args.users / f:.0f} contacts/s; direct adds {args.users / d:.0f}/s; "
                  f"ratio steady pipeline time / direct time {f / d:.1f}x")


if __name__ == "__main__":
    main()
