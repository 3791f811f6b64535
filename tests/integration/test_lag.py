"""`idsync lag` against the real broker: its figures equal those of Kafka's own ConsumerGroupCommand
(kafka-consumer-groups --describe), a stopped consumer's lag grows and its group goes to STOP, a
consumer that owns its partitions but commits nothing goes to STALL, a caught-up one stays OK."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from idsync import cli
from idsync.lag import show_lag
from idsync.rig import KafkaBroker
from idsync.rig.kafka_tools import describe_group
from idsync.runtime import contact_writer_group
from streams.config.topology import Topology, load_topology
from streams.kafka.topics import ensure_topics
from tests.integration.test_operations import write_topology

pytestmark = pytest.mark.integration


@pytest.fixture
def topology(kafka_broker: KafkaBroker, unique_name: str, tmp_path: Path) -> Topology:
    topology = load_topology(write_topology(tmp_path / "topology.yaml", kafka_broker, unique_name))
    asyncio.run(ensure_topics(topology.kafka, topology.streams.app_id))
    return topology


async def produce(topology: Topology, topic: str, counts: dict[int, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=topology.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for partition, count in counts.items():
            for i in range(count):
                await producer.send_and_wait(topic, f"record {i}".encode(), key=b"k", partition=partition)
    finally:
        await producer.stop()


async def commit(topology: Topology, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit offsets for a group from outside it (no member joins)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=topology.kafka.bootstrap_servers, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = {TopicPartition(topic, p): offset for (topic, p), offset in offsets.items()}
        consumer.assign(list(partitions))
        await consumer.commit(partitions)
    finally:
        await consumer.stop()


def figures(document: dict, group: str) -> dict[tuple[str, int], dict]:
    (found,) = [g for g in document["groups"] if g["group"] == group]
    return {(p["topic"], p["partition"]): p for p in found["partitions"]}


def test_lag_figures_equal_those_of_kafkas_consumer_group_command(topology: Topology, tmp_path: Path, capsys) -> None:
    app, writer = topology.streams.app_id, contact_writer_group(topology)
    changes, contacts = topology.kafka.topics.changes, topology.kafka.topics.contacts
    joins = f"{app}-join-claims"
    asyncio.run(produce(topology, changes, {0: 5, 1: 3, 2: 4}))
    asyncio.run(produce(topology, joins, {1: 2}))
    asyncio.run(produce(topology, contacts, {0: 6, 2: 1}))
    produced_at = time.time()
    time.sleep(1.0)
    asyncio.run(commit(topology, app, {(changes, 0): 2, (changes, 1): 3, (joins, 1): 1}))
    asyncio.run(commit(topology, writer, {(contacts, 0): 4, (contacts, 2): 1}))

    code = cli.main(["lag", "--json", "--samples", "2", "--interval", "0.2",
                     "--topology", str(tmp_path / "topology.yaml")])
    document = json.loads(capsys.readouterr().out)
    assert code == 0

    for group, expected_rows in ((app, 3), (writer, 2)):
        rows = describe_group(topology.kafka.bootstrap_servers, group)
        assert len(rows) == expected_rows, rows
        ours = figures(document, group)
        for row in rows:
            mine = ours[(row["TOPIC"], int(row["PARTITION"]))]
            assert (str(mine["committed"]), str(mine["log_end"]), str(mine["lag"])) == (
                row["CURRENT-OFFSET"], row["LOG-END-OFFSET"], row["LAG"]), row

    ours = figures(document, app)
    assert [ours[(changes, p)]["lag"] for p in range(3)] == [3, 0, 4]  # partition 2: never committed, read from 0
    assert ours[(changes, 2)]["committed"] is None
    waited = time.time() - produced_at
    assert 1.0 <= ours[(changes, 0)]["lag_seconds"] <= waited + 1
    assert ours[(changes, 1)]["lag_seconds"] == 0
    assert figures(document, writer)[(contacts, 0)]["lag"] == 2


class Consumer:
    """A member of a group that reads its topic and, if told to, commits what it read."""

    def __init__(self, topology: Topology, group: str, topic: str, *, commits: bool) -> None:
        self._consumer = AIOKafkaConsumer(topic, bootstrap_servers=topology.kafka.bootstrap_servers, group_id=group,
                                          enable_auto_commit=False, auto_offset_reset="earliest")
        self._commits = commits
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            if batches and self._commits:
                await self._consumer.commit()

    async def caught_up(self, topic: str, timeout: float = 30) -> None:
        """Until the group committed every partition's end (or, not committing, was assigned them all)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assigned = self._consumer.assignment()
            if assigned:
                ends = await self._consumer.end_offsets(list(assigned))
                committed = {tp: await self._consumer.committed(tp) for tp in assigned}
                if not self._commits or all(committed[tp] == ends[tp] for tp in assigned):
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"consumer not caught up on {topic}")

    async def stop(self) -> None:
        """Leave the group (again: harmless)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


async def watch(topology: Topology, prints: int) -> list[dict]:
    """`idsync lag --watch --json` until it printed `prints` times: a record goes to the changes
    topic between samples, so the engine group's lag grows while nobody consumes it."""
    printed: list[str] = []

    def out(text: str) -> None:
        printed.append(text)
        if len(printed) == prints:
            raise _Enough

    async def keep_producing() -> None:
        while True:
            await produce(topology, topology.kafka.topics.changes, {0: 1})
            await asyncio.sleep(0.2)

    producing = asyncio.create_task(keep_producing())
    try:
        await show_lag(topology, json=True, watch=True, samples=3, interval=0.5, out=out)
    except _Enough:
        pass
    finally:
        producing.cancel()
        await asyncio.gather(producing, return_exceptions=True)
    return [json.loads(text) for text in printed]


class _Enough(Exception):
    pass


async def test_a_stopped_consumer_goes_to_stop_as_its_lag_grows_and_a_caught_up_one_is_ok(topology: Topology) -> None:
    app, writer = topology.streams.app_id, contact_writer_group(topology)
    changes, contacts = topology.kafka.topics.changes, topology.kafka.topics.contacts
    await produce(topology, changes, {0: 3, 1: 2})
    await produce(topology, contacts, {0: 4, 1: 1})
    engine = Consumer(topology, app, changes, commits=True)
    contact_writer = Consumer(topology, writer, contacts, commits=True)
    await engine.start()
    await contact_writer.start()
    try:
        await engine.caught_up(changes)
        await contact_writer.caught_up(contacts)
        await engine.stop()  # the engine's group is now empty; the writer goes on

        lines = await watch(topology, prints=3)
    finally:
        await engine.stop()
        await contact_writer.stop()

    lags = [figures(line, app)[(changes, 0)]["lag"] for line in lines]
    assert lags == sorted(lags) and lags[-1] > lags[0] > 0, lags
    final = {g["group"]: g for g in lines[-1]["groups"]}
    assert (final[app]["status"], final[app]["state"], final[app]["members"]) == ("STOP", "Empty", 0)
    assert figures(lines[-1], app)[(changes, 0)]["status"] == "STOP"
    assert figures(lines[-1], app)[(changes, 0)]["lag_seconds"] > 0
    assert figures(lines[-1], app)[(changes, 1)]["status"] == "OK"  # caught up, nothing new there
    assert (final[writer]["status"], final[writer]["lag"], final[writer]["members"]) == ("OK", 0, 1)
    assert {p["owner"] is not None for p in final[writer]["partitions"]} == {True}


async def test_a_consumer_that_owns_its_partitions_but_commits_nothing_goes_to_stall(topology: Topology) -> None:
    app, changes = topology.streams.app_id, topology.kafka.topics.changes
    await commit(topology, app, {(changes, 0): 0})
    stuck = Consumer(topology, app, changes, commits=False)
    await stuck.start()
    try:
        await stuck.caught_up(changes)
        lines = await watch(topology, prints=2)
    finally:
        await stuck.stop()
    final = {g["group"]: g for g in lines[-1]["groups"]}
    partition = figures(lines[-1], app)[(changes, 0)]
    assert (final[app]["status"], partition["status"], partition["committed"]) == ("STALL", "STALL", 0)
    assert partition["owner"] is not None and partition["lag"] > 0
