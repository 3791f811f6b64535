"""`idsync conflicts` and `idsync deletes` against the real broker: the lists come from each key's
latest record on the compacted topics, and a verdict lands on partition 0 of the engine's
delete-requests topic."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from idsync import cli
from idsync.rig import KafkaBroker
from streams.config.metaverse import engine_settings
from streams.config.topology import Topology, load_topology
from streams.kafka.topics import ensure_topics
from streams.metaverse_events import Conflict, DeleteRequest, DeleteVerdict

pytestmark = pytest.mark.integration


def write_topology(path: Path, broker: KafkaBroker, name: str) -> Path:
    """A topology that no reader or worker uses: only its Kafka section matters here."""
    central = "dc=central,dc=idsync,dc=test"
    document = {
        "kafka": {
            "bootstrap_servers": broker.bootstrap_servers,
            "partitions": 3,
            "topics": {topic: f"{name}.{topic}" for topic in
                       ("changes", "positions", "contacts", "errors", "conflicts", "held_deletes")},
        },
        "streams": {"app_id": name},
        "forests": [
            {"name": "central", "role": "central", "url": "ldap://127.0.0.1:1", "base_dn": central,
             "bind_dn": f"cn=admin,{central}", "password_env": "IDSYNC_UNUSED"},
            {"name": "forest-a", "role": "user", "url": "ldap://127.0.0.1:2", "base_dn": "dc=forest-a,dc=idsync,dc=test",
             "bind_dn": "cn=admin,dc=forest-a,dc=idsync,dc=test", "password_env": "IDSYNC_UNUSED",
             "contacts_ou": f"ou=forest-a,{central}"},
        ],
        "contacts": {"attributes": {"mail": "{mail}"}},
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def topology_file(kafka_broker: KafkaBroker, unique_name: str, tmp_path: Path) -> Path:
    path = write_topology(tmp_path / "topology.yaml", kafka_broker, unique_name)
    topology = load_topology(path)
    asyncio.run(ensure_topics(topology.kafka, topology.streams.app_id))
    return path


def produce(topology: Topology, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=topology.kafka.bootstrap_servers, acks="all")
        await producer.start()
        try:
            for key, value in records:
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    asyncio.run(send())


def verdicts(topology: Topology) -> dict[int, list[tuple[bytes, DeleteVerdict]]]:
    """Every record on the delete-requests topic, by partition."""

    async def read() -> dict[int, list[tuple[bytes, DeleteVerdict]]]:
        topic = engine_settings(topology).topics.deletes
        consumer = AIOKafkaConsumer(bootstrap_servers=topology.kafka.bootstrap_servers, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in range(topology.kafka.partitions)]
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            found: dict[int, list[tuple[bytes, DeleteVerdict]]] = {}
            for tp in partitions:
                while await consumer.position(tp) < ends[tp]:
                    for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                        found.setdefault(tp.partition, []).append((record.key, DeleteVerdict.from_bytes(record.value)))
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())


def idsync(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def conflict(conflict_id: str, *, open: bool, at: str, reason: str = "two objects of forest-a claim email:ada@x.org") -> Conflict:
    return Conflict(conflict_id=conflict_id, kind="join-ambiguous", open=open, reason=reason,
                    parties=("forest-a/1", "forest-a/2"), at=at)


def request(person: str, minute: int) -> DeleteRequest:
    return DeleteRequest(person=person, request_id=f"r-{person}", dn=f"cn={person},ou=forest-a,dc=central",
                         requested_at=f"2026-12-01T10:{minute:02d}:00+00:00")


def test_conflicts_lists_the_open_ones(topology_file: Path, capsys) -> None:
    topology = load_topology(topology_file)
    assert idsync(capsys, "conflicts", "--topology", str(topology_file)) == (0, "no open conflicts\n", "")

    resolved = conflict("join:email:bo@x.org", open=True, at="2026-12-01T09:00:00+00:00")
    produce(topology, topology.kafka.topics.conflicts, [
        (b"join:email:bo@x.org", resolved.to_bytes()),
        (b"join:email:ada@x.org", conflict("join:email:ada@x.org", open=True, at="2026-12-01T10:00:00+00:00").to_bytes()),
        (b"join:email:bo@x.org", conflict("join:email:bo@x.org", open=False, at="2026-12-01T11:00:00+00:00").to_bytes()),
        (b"dn:forest-a/7", Conflict(conflict_id="dn:forest-a/7", kind="dn-taken", open=True, reason="x" * 200,
                                    parties=("forest-a/7",), at="2026-12-01T12:00:00+00:00").to_bytes()),
    ])

    code, out, err = idsync(capsys, "conflicts", "--topology", str(topology_file))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "KIND            CONFLICT ID           SINCE                 PARTIES                 REASON",
        "join-ambiguous  join:email:ada@x.org  2026-12-01 10:00:00Z  forest-a/1, forest-a/2  "
        "two objects of forest-a claim email:ada@x.org",
        "dn-taken        dn:forest-a/7         2026-12-01 12:00:00Z  forest-a/7              " + "x" * 59 + "…",
        "2 open conflicts",
    ]

    code, out, _ = idsync(capsys, "conflicts", "--json", "--topology", str(topology_file))
    assert code == 0
    listed = json.loads(out)
    assert [c["conflict_id"] for c in listed] == ["join:email:ada@x.org", "dn:forest-a/7"]
    assert listed[0] == {"conflict_id": "join:email:ada@x.org", "kind": "join-ambiguous", "open": True,
                         "reason": "two objects of forest-a claim email:ada@x.org",
                         "parties": ["forest-a/1", "forest-a/2"], "at": "2026-12-01T10:00:00+00:00"}


def test_held_deletes_are_listed_approved_and_rejected(topology_file: Path, capsys) -> None:
    topology = load_topology(topology_file)
    file = str(topology_file)
    assert idsync(capsys, "deletes", "--held", "--topology", file) == (0, "no held deletes\n", "")
    assert idsync(capsys, "deletes", "approve", "--topology", file) == (0, "no held deletes to approve\n", "")

    produce(topology, topology.kafka.topics.held_deletes, [
        (b"p1", request("p1", 1).to_bytes()),
        (b"p2", request("p2", 2).to_bytes()),
        (b"p3", request("p3", 3).to_bytes()),
        (b"p2", None),  # decided
    ])

    code, out, err = idsync(capsys, "deletes", "--held", "--topology", file)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "PERSON  DN                            REQUESTED AT",
        "p1      cn=p1,ou=forest-a,dc=central  2026-12-01 10:01:00Z",
        "p3      cn=p3,ou=forest-a,dc=central  2026-12-01 10:03:00Z",
        "2 held deletes",
    ]
    code, out, _ = idsync(capsys, "deletes", "--json", "--topology", file)
    assert code == 0
    assert json.loads(out) == [
        {"person": "p1", "request_id": "r-p1", "dn": "cn=p1,ou=forest-a,dc=central", "requested_at": "2026-12-01T10:01:00+00:00", "hold": False},
        {"person": "p3", "request_id": "r-p3", "dn": "cn=p3,ou=forest-a,dc=central", "requested_at": "2026-12-01T10:03:00+00:00", "hold": False},
    ]

    assert idsync(capsys, "deletes", "reject", "--person", "p3", "--topology", file) == (0, "rejected 1 held delete: p3\n", "")
    code, out, err = idsync(capsys, "deletes", "approve", "--person", "p1", "--person", "p2", "--topology", file)
    assert (code, out) == (2, "")
    assert err.startswith("nothing sent: no held delete for p2")
    assert idsync(capsys, "deletes", "approve", "--topology", file) == (
        0, "approved all 2 held deletes (a delete held from now on waits for another verdict)\n", "")

    assert verdicts(topology) == {0: [
        (b"verdict", DeleteVerdict(approve=False, persons=("p3",))),
        # No worker here to drop p3's: every delete the command read is named, none held after it.
        (b"verdict", DeleteVerdict(approve=True, persons=("p1", "p3"))),
    ]}
