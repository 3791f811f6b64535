"""Restart of a worker holding N objects: local state on disk (RocksDB) against tables in memory.

Starts its own broker and central slapd (the rig's). Per table store (`streams.state_store`), it
starts a worker, reads its resident memory once it is ready, publishes N user adds straight into
a fresh changes topic, waits until every contact exists and reads its resident memory again. Once
the worker has consumed everything, it stops it (cleanly), publishes one more
change, starts the worker again on the same state directory and measures the time from the
start to that change's contact in the central forest: with RocksDB the tables come back from
disk and the changelogs' tail, in memory every changelog is read whole again. Measurements
only: nothing here asserts a bound.

    .venv/bin/python bench/restart.py [--users 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import CENTRAL_SUFFIX, count_contacts, publish, topology_file, user_add  # noqa: E402

from idsync.rig import KafkaBroker, SlapdInstance  # noqa: E402
from idsync.rig.worker import WorkerProcess  # noqa: E402
from idsync.runtime import contact_writer_group  # noqa: E402
from streams.config.metaverse import engine_settings  # noqa: E402
from streams.config.topology import load_topology  # noqa: E402
from streams.kafka.lag import lag_probe  # noqa: E402
from streams.kafka.topics import ensure_topics  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for(central: SlapdInstance, base: str, wanted: int, worker: WorkerProcess) -> None:
    # A count searches every contact: once every 2 s, or at 100,000 it slows the load it measures.
    while count_contacts(central, base) < wanted:
        if not worker.running:
            raise RuntimeError(f"worker exited; see {worker.log_path}")
        time.sleep(2)


def wait_until_idle(topology, worker: WorkerProcess) -> None:
    """Until the worker consumed everything (the engine's topics and the contacts): the central
    forest's read-back of the last contacts lags behind their creation, and a restart would
    first work through it. Heartbeats land every 30 s, so a lag of a few records counts as idle."""

    async def lagging() -> int:
        async with lag_probe(topology.kafka) as probe:
            groups = [(topology.streams.app_id, topic) for topic in engine_settings(topology).topics.consumed()]
            groups.append((contact_writer_group(topology), topology.kafka.topics.contacts))
            behind = 0
            for group, topic in groups:
                behind += sum((await probe.lag(group, topic)).values())
            return behind

    while (behind := asyncio.run(lagging())) > 3 * topology.kafka.partitions:
        if not worker.running:
            raise RuntimeError(f"worker exited; see {worker.log_path}")
        print(f"  waiting for the worker to catch up: {behind} records", flush=True)
        time.sleep(5)


def wait_for_contact(central: SlapdInstance, base: str, index: int, worker: WorkerProcess) -> None:
    """Until the contact of user `index` exists (one indexed search, so it is asked often)."""
    mail = user_add(index).attributes["mail"][0]
    while True:
        with central.admin_connection() as connection:
            if connection.search(base, f"(&(idsyncAnchor=*)(mail={mail}))", attributes=["1.1"]):
                return
        if not worker.running:
            raise RuntimeError(f"worker exited; see {worker.log_path}")
        time.sleep(0.05)


def run(workdir: Path, broker: KafkaBroker, central: SlapdInstance, store: str, users: int) -> dict[str, float]:
    name = f"restart-{store}-{secrets.token_hex(2)}"
    path = topology_file(workdir, name, broker, central)
    document = yaml.safe_load(path.read_text())
    document["streams"]["state_store"] = store
    path.write_text(yaml.safe_dump(document))
    topology = load_topology(path)
    base = topology.forest("forest-a").contacts_ou
    asyncio.run(ensure_topics(topology.kafka))
    env, log = {"BENCH_PASSWORD": central.admin_password}, workdir / f"{name}.log"
    worker = WorkerProcess(path, log_path=log, env=env).start()
    try:
        while "[^Worker]: Ready" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.2)
        empty = rss_mb(worker.pid)
        started = time.monotonic()
        asyncio.run(publish(broker.bootstrap_servers, topology.kafka.topics.changes, users))
        wait_for(central, base, users, worker)
        loaded, memory = time.monotonic() - started, rss_mb(worker.pid)
        wait_until_idle(topology, worker)
    finally:
        worker.stop()
    asyncio.run(publish_one(broker.bootstrap_servers, topology.kafka.topics.changes, users))
    worker = WorkerProcess(path, log_path=log, env=env).start()  # the same log name: the same state dir
    started = time.monotonic()
    try:
        wait_for_contact(central, base, users, worker)
        return {"load_s": loaded, "empty_mb": empty, "rss_mb": memory,
                "restart_to_write_s": time.monotonic() - started}
    finally:
        worker.stop()


async def publish_one(bootstrap: str, topic: str, index: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        change = user_add(index)
        await producer.send_and_wait(topic, key=change.key.encode(), value=change.to_bytes())
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--stores", default="rocksdb,memory", help="comma-separated: rocksdb, memory")
    parser.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it (the logs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    password = secrets.token_urlsafe(16)
    os.environ["BENCH_PASSWORD"] = password
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="idsync-restart-")))
        else:
            workdir = args.keep.absolute()
            workdir.mkdir(parents=True, exist_ok=True)
        broker = stack.enter_context(KafkaBroker(workdir / "kafka"))
        central = stack.enter_context(SlapdInstance(workdir, name="central", suffix=CENTRAL_SUFFIX,
                                                    admin_password=password))
        results = {store: run(workdir, broker, central, store, args.users) for store in args.stores.split(",")}
    # MB/100k: what the objects add to the worker's resident memory (RSS loaded minus RSS empty).
    print(f"{args.users} users: {'store':8} {'loaded in s':>12} {'RSS empty':>10} {'RSS loaded':>11} "
          f"{'MB/100k':>8} {'restart->write s':>17}")
    for store, figures in results.items():
        added = (figures["rss_mb"] - figures["empty_mb"]) * 100_000 / args.users
        print(f"{'':{len(str(args.users)) + 8}}{store:8} {figures['load_s']:12.1f} {figures['empty_mb']:10.0f} "
              f"{figures['rss_mb']:11.0f} {added:8.0f} {figures['restart_to_write_s']:17.2f}")


if __name__ == "__main__":
    main()
