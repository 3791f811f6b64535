"""An AD forest's reader running in a process of its own against the real broker, and what it published.

The process is :mod:`tests.integration.ad.reader_process`: the SourceRunner with the real
PositionStore and idempotent producer, as in the worker. A topology needs a central forest; the
other Samba DC stands in for it, never contacted, since only the reader runs.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from connectors.ad.values import cookie_usn, decode_cookie
from idsync.rig import KafkaBroker
from idsync.rig.process import ManagedProcess
from idsync.rig.samba import SambaDC
from streams.config.topology import Topology, load_topology
from streams.events import DirectoryChange, ReaderPosition, decode_change_topic
from streams.kafka.dead_letters import HEADER_PREFIX
from streams.kafka.topics import ensure_topics, topic_specs

REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    headers: dict[str, str]
    value: bytes


@dataclass
class ReaderDeployment:
    topology: Topology
    forest: str
    workdir: Path
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return self.topology.forest(self.forest).change_capture.mode

    @property
    def log_text(self) -> str:
        return "\n".join(p.log_path.read_text(errors="replace") for p in self.processes if p.log_path.exists())

    @property
    def running(self) -> bool:
        return bool(self.processes) and self.processes[-1].running

    def start(self) -> None:
        process = ManagedProcess(
            f"reader-{self.forest}",
            [sys.executable, "-m", "tests.integration.ad.reader_process", str(self.topology.source), self.forest],
            log_path=self.workdir / f"reader-{len(self.processes)}.log",
            cwd=REPO_ROOT,
        )
        process.start()
        self.processes.append(process)

    def kill(self) -> None:
        self.processes[-1].kill()

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def stored_usn(self) -> int | None:
        """The USN the reader's stored position covers (DirSync: its cookie's high-water mark)."""
        wanted = f"forest/{self.forest}".encode()
        stored = [r.value for r in self._records(self.topology.kafka.topics.positions) if r.key == wanted]
        if not stored:
            return None
        position = ReaderPosition.from_bytes(stored[-1]).position
        return cookie_usn(decode_cookie(position)) if self.mode == "ad-dirsync" else int(position)

    def changes(self) -> list[DirectoryChange]:
        """Every change the reader published, each object's in the order it was published."""
        decoded = (decode_change_topic(r.value) for r in self._records(self.topology.kafka.topics.changes))
        return [change for change in decoded if isinstance(change, DirectoryChange)]

    def dead_letters(self) -> list[DeadLetterRecord]:
        return [
            DeadLetterRecord(
                headers={k.removeprefix(HEADER_PREFIX): v.decode() for k, v in r.headers}, value=r.value
            )
            for r in self._records(self.topology.kafka.topics.errors)
        ]

    def _records(self, topic: str) -> list[ConsumerRecord]:
        (spec,) = (spec for spec in topic_specs(self.topology.kafka) if spec.name == topic)
        return asyncio.run(_read_to_end(self.topology.kafka.bootstrap_servers, topic, spec.partitions))


def deploy_reader(
    workdir: Path, name: str, broker: KafkaBroker, dc: SambaDC, stand_in: SambaDC, *, base_dn: str, mode: str
) -> ReaderDeployment:
    """A reader of forest "alpha" (the `dc`, under base_dn) with topics of its own, not yet started."""
    workdir.mkdir(parents=True, exist_ok=True)
    forests = []
    for forest, server, base in (("central", stand_in, stand_in.base_dn), ("alpha", dc, base_dn)):
        password_file = workdir / f"{forest}.password"
        password_file.write_text(server.admin_password)
        forests.append({
            "name": forest,
            "role": "central" if forest == "central" else "user",
            "url": server.url,
            "base_dn": base,
            "bind_dn": server.admin_dn,
            "password_file": str(password_file),
            "change_capture": {"mode": mode, "poll_interval_seconds": 0.1},
        } | ({} if forest == "central" else {"contacts_ou": f"OU={name},{stand_in.base_dn}"}))
    document = {
        "kafka": {
            "bootstrap_servers": broker.bootstrap_servers,
            "topics": {role: f"{name}.{role}" for role in ("changes", "positions", "contacts", "errors")},
        },
        "streams": {"app_id": name},
        "forests": forests,
        "contacts": {"attributes": {"displayName": "{displayName}"}},
    }
    path = workdir / "topology.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    topology = load_topology(path)
    asyncio.run(ensure_topics(topology.kafka))
    return ReaderDeployment(topology=topology, forest="alpha", workdir=workdir)


async def _read_to_end(bootstrap_servers: str, topic: str, partition_count: int) -> list[ConsumerRecord]:
    """Every record of the topic up to its current end, partition by partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: dict[TopicPartition, list[ConsumerRecord]] = {p: [] for p in partitions}
        while any([await consumer.position(p) < ends[p] for p in partitions]):
            for partition, batch in (await consumer.getmany(timeout_ms=1000)).items():
                records[partition] += batch
        return [record for partition in partitions for record in records[partition] if record.offset < ends[partition]]
    finally:
        await consumer.stop()
