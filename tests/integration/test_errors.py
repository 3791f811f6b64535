"""`idsync errors` against the real broker: dead letters listed with their fields (and followed),
replayed to their origin topic once (again only when asked, a superseded contact state not at
all), and a contact state the real contact writer rejected lands in the central forest once its
cause is fixed and it is replayed."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from idsync import cli
from idsync.errors import list_errors
from idsync.rig import KafkaBroker
from streams.config.topology import Topology, load_topology
from streams.events import ChangeOp, ContactState, DirectoryChange
from streams.kafka.dead_letters import DeadLetter
from streams.kafka.error_topic import REPLAY_HEADER
from streams.kafka.topics import ensure_topics
from tests.integration.test_contact_writer import CONTACT_CLASSES, Central, Pipeline, central, eventually_async, pipeline, stop  # noqa: F401 - fixtures
from tests.integration.test_operations import write_topology

pytestmark = pytest.mark.integration


@pytest.fixture
def topology_file(kafka_broker: KafkaBroker, unique_name: str, tmp_path: Path) -> Path:
    path = write_topology(tmp_path / "topology.yaml", kafka_broker, unique_name)
    topology = load_topology(path)
    asyncio.run(ensure_topics(topology.kafka, topology.streams.app_id))
    return path


def idsync(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def send(topology: Topology, topic: str, value: bytes | None, *, key: bytes | None = None,
               partition: int | None = None, headers: list[tuple[str, bytes]] | None = None) -> int:
    """The record's offset once every replica has it."""
    producer = AIOKafkaProducer(bootstrap_servers=topology.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, value, key=key, partition=partition, headers=headers)
        return sent.offset
    finally:
        await producer.stop()


async def dead_letter(topology: Topology, letter: DeadLetter) -> None:
    """What a stage does with a record it rejects (streams/kafka/dead_letters.py)."""
    await send(topology, topology.kafka.topics.errors, letter.value, key=letter.key, headers=letter.headers())


async def records(topology: Topology, topic: str, partition: int) -> list[ConsumerRecord]:
    consumer = AIOKafkaConsumer(bootstrap_servers=topology.kafka.bootstrap_servers, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        found: list[ConsumerRecord] = []
        while await consumer.position(tp) < end:
            found += (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
        return found
    finally:
        await consumer.stop()


def change(object_id: str, dn: str) -> DirectoryChange:
    return DirectoryChange(forest="forest-a", object_id=object_id, op=ChangeOp.MODIFY, dn=dn, position="p-1",
                           changed_at="2026-12-05T09:00:00+00:00")


async def rejected_change(topology: Topology) -> tuple[DirectoryChange, int]:
    """A change on partition 1 of the changes topic that the metaverse stage dead-lettered."""
    rejected = change("0b1c", "uid=ada,ou=people,dc=forest-a,dc=idsync,dc=test")
    changes = topology.kafka.topics.changes
    offset = await send(topology, changes, rejected.to_bytes(), key=rejected.key.encode(), partition=1)
    await dead_letter(topology, DeadLetter(
        stage="metaverse", reason="something the engine could not handle", key=rejected.key.encode(),
        value=rejected.to_bytes(), forest="forest-a", origin_topic=changes, origin_partition=1, origin_offset=offset))
    return rejected, offset


async def rejected_by_reader(topology: Topology) -> None:
    await dead_letter(topology, DeadLetter(stage="reader", reason="event of 1.2 MB is over the limit", key=None,
                                           value=b"raw accesslog record", forest="forest-b",
                                           source_position="20261205090000.000001Z#000000#000#000000"))


def test_errors_are_listed_with_their_fields_and_filtered_by_stage(topology_file: Path, capsys) -> None:
    topology, file = load_topology(topology_file), str(topology_file)
    assert idsync(capsys, "errors", "--topology", file) == (0, "no errors\n", "")

    asyncio.run(rejected_by_reader(topology))
    rejected, offset = asyncio.run(rejected_change(topology))

    code, out, err = idsync(capsys, "errors", "--topology", file)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["ERROR", "TIME", "STAGE", "SOURCE", "DN", "ANCHOR", "REPLAYED", "REASON"]
    assert lines[1].startswith("0:0 ") and "reader" in lines[1] and "forest-b 20261205090000" in lines[1]
    assert f"{topology.kafka.topics.changes}[1]@{offset}" in lines[2] and rejected.dn in lines[2]
    assert "forest-a/0b1c" in lines[2] and lines[-1] == "2 errors"

    code, out, _ = idsync(capsys, "errors", "--json", "--stage", "metaverse", "--topology", file)
    (listed,) = json.loads(out)
    assert {key: listed[key] for key in ("error", "stage", "reason", "forest", "topic", "partition", "offset", "dn",
                                         "anchor", "replayed")} == {
        "error": "0:1", "stage": "metaverse", "reason": "something the engine could not handle", "forest": "forest-a",
        "topic": topology.kafka.topics.changes, "partition": 1, "offset": offset, "dn": rejected.dn,
        "anchor": "forest-a/0b1c", "replayed": None,
    }
    assert listed["time"].startswith("20")
    assert json.loads(idsync(capsys, "errors", "--json", "--since", "2h", "--topology", file)[1])[0]["error"] == "0:0"
    assert json.loads(idsync(capsys, "errors", "--json", "--since", "2099-01-01", "--topology", file)[1]) == []


async def test_follow_prints_the_list_then_each_new_dead_letter(topology_file: Path) -> None:
    topology = load_topology(topology_file)
    await rejected_by_reader(topology)
    printed: list[str] = []
    following = asyncio.create_task(list_errors(topology, json=True, follow=True, out=printed.append))
    try:
        await eventually_async(lambda: _at_least(printed, 1), timeout=10, what="the list")
        await rejected_change(topology)
        await eventually_async(lambda: _at_least(printed, 2), timeout=10, what="the new dead letter")
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    assert [json.loads(line)["stage"] for line in printed] == ["reader", "metaverse"]


async def _at_least(items: list, count: int) -> bool:
    return len(items) >= count


def test_a_replayed_change_lands_on_its_origin_partition_once_unless_asked_again(topology_file: Path, capsys) -> None:
    topology, file = load_topology(topology_file), str(topology_file)
    changes = topology.kafka.topics.changes
    asyncio.run(rejected_by_reader(topology))
    rejected, offset = asyncio.run(rejected_change(topology))

    code, out, _ = idsync(capsys, "errors", "replay", "--topology", file)
    assert code == 0
    assert out.splitlines() == [
        f"replayed 0:1 (metaverse) to {changes}[1]@{offset + 1}: {rejected.dn}, forest-a/0b1c",
        "skipped 0:0 (reader): no origin topic: a reader's rejected record is published again by the reader's next "
        "read of the object or by `idsync import --full`",
        "replayed 1 error, skipped 1",
    ]
    *_, copy = asyncio.run(records(topology, changes, 1))
    assert (copy.offset, copy.key, copy.value) == (offset + 1, rejected.key.encode(), rejected.to_bytes())
    assert dict(copy.headers) == {REPLAY_HEADER: f"{topology.kafka.topics.errors}/0:1".encode()}

    code, out, _ = idsync(capsys, "errors", "replay", "--stage", "metaverse", "--topology", file)
    assert out.splitlines()[0].startswith("skipped 0:1 (metaverse): replayed already on ")
    assert f"to {changes}[1]@{offset + 1} (--again sends it once more)" in out.splitlines()[0]
    assert len(asyncio.run(records(topology, changes, 1))) == 2

    listed = json.loads(idsync(capsys, "errors", "--json", "--stage", "metaverse", "--topology", file)[1])
    assert {k: v for k, v in listed[0]["replayed"].items() if k != "at"} == {"topic": changes, "partition": 1,
                                                                             "offset": offset + 1}

    code, out, _ = idsync(capsys, "errors", "replay", "--again", "--stage", "metaverse", "--topology", file)
    assert out.splitlines()[-1] == "replayed 1 error, skipped 0"
    assert len(asyncio.run(records(topology, changes, 1))) == 3


def test_a_contact_state_newer_on_its_topic_is_not_replayed(topology_file: Path, capsys) -> None:
    topology, file = load_topology(topology_file), str(topology_file)
    contacts = topology.kafka.topics.contacts
    old = ContactState(anchor="person-7", present=True, container_dn="ou=gal,dc=central", dn="cn=Old,ou=gal,dc=central")
    new = ContactState(anchor="person-7", present=True, container_dn="ou=gal,dc=central", dn="cn=New,ou=gal,dc=central")
    offset = asyncio.run(send(topology, contacts, old.to_bytes(), key=b"person-7", partition=0))
    asyncio.run(dead_letter(topology, DeadLetter(stage="contact-writer", reason="rejected", key=b"person-7",
                                                 value=old.to_bytes(), origin_topic=contacts, origin_partition=0,
                                                 origin_offset=offset)))
    asyncio.run(send(topology, contacts, new.to_bytes(), key=b"person-7", partition=0))

    code, out, _ = idsync(capsys, "errors", "replay", "--topology", file)
    assert (code, out.splitlines()) == (0, [
        f"skipped 0:0 (contact-writer): superseded: a newer state of person-7 is on {contacts}[0]",
        "replayed 0 errors, skipped 1",
    ])
    assert len(asyncio.run(records(topology, contacts, 0))) == 2


async def test_a_contact_state_the_writer_rejected_lands_once_its_cause_is_fixed_and_it_is_replayed(
    central: Central, pipeline: Pipeline, kafka_broker: KafkaBroker, unique_name: str, tmp_path: Path,
) -> None:
    file = str(write_topology(tmp_path / "topology.yaml", kafka_broker, unique_name))  # the pipeline's topics
    topology = load_topology(file)
    central.ensure_contacts_ou()
    anchor = str(uuid.uuid4())
    for name in ("Ada One", "Ada Two"):  # two entries carry one anchor: the writer cannot choose
        central.add(central.dn(name), CONTACT_CLASSES, cn=name, sn=name, mail="ada@x.org", idsyncAnchor=anchor)
    state = central.state("Ada Lovelace", "ada@x.org", anchor=anchor)
    await pipeline.send(state)
    task = await pipeline.run_sink(central.writer)
    try:
        (letter,) = await eventually_async(lambda: records(topology, topology.kafka.topics.errors, 0), timeout=30,
                                           what="the dead letter")
        assert dict(letter.headers)["idsync.errors.stage"] == b"contact-writer"
        listed = json.loads(await asyncio.to_thread(_cli_out, "errors", "--json", "--topology", file))
        assert [(e["stage"], e["anchor"], e["dn"], e["offset"]) for e in listed] == [
            ("contact-writer", anchor, central.dn("Ada Lovelace"), 0)]
        assert "is on 2 entries" in listed[0]["reason"]

        central.delete(central.dn("Ada Two"))  # the cause, fixed
        out = await asyncio.to_thread(_cli_out, "errors", "replay", "--topology", file)
        assert out.splitlines()[0].startswith(f"replayed 0:0 (contact-writer) to {topology.kafka.topics.contacts}[0]@1")

        contact = await eventually_async(lambda: asyncio.to_thread(central.contact, "Ada Lovelace"), timeout=30,
                                         what="the replayed contact state applied")
        assert contact["idsyncanchor"] == [anchor] and len(central.contacts()) == 1

        out = await asyncio.to_thread(_cli_out, "errors", "replay", "--topology", file)
        assert out.splitlines()[-1] == "replayed 0 errors, skipped 1"
        assert len(await records(topology, topology.kafka.topics.contacts, 0)) == 2
        assert len(await records(topology, topology.kafka.topics.errors, 0)) == 1
    finally:
        await stop(task)


def _cli_out(*argv: str) -> str:
    """The command's standard output (run in a thread of its own: it runs its own event loop)."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert cli.main(list(argv)) == 0
    return buffer.getvalue()
