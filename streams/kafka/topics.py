"""idsync's own Kafka topics: declared once, with the cleanup policy each one needs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.config.topology import KafkaSettings

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool


def topic_specs(kafka: KafkaSettings) -> tuple[TopicSpec, ...]:
    topics = kafka.topics
    return (
        # Keyed by forest/object id: per-object order holds within a partition.
        TopicSpec(topics.changes, kafka.partitions, compacted=False),
        # Latest value per key is all a resuming reader or a resync needs.
        TopicSpec(topics.positions, 1, compacted=True),
        TopicSpec(topics.contacts, kafka.partitions, compacted=True),
        TopicSpec(topics.errors, 1, compacted=False),
    )


async def ensure_topics(kafka: KafkaSettings) -> None:
    """Create whichever of idsync's topics are missing; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, client_id=kafka.client_id)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=kafka.replication_factor,
                topic_configs={"cleanup.policy": "compact"} if spec.compacted else {},
            )
            for spec in topic_specs(kafka)
            if spec.name not in existing
        ]
        if not missing:
            return
        response = await admin.create_topics(missing)
        for topic, code, *message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {topic!r}: error {code} {message}")
            log.info("topic ready topic=%s", topic)
    finally:
        await admin.close()
