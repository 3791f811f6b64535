"""idsync's own Kafka topics: declared once, with the cleanup policy each one needs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.config.topology import KafkaSettings
from streams.kafka.lease import lease_topic
from streams.kafka.clients import client_settings
from streams.processors.stages import EngineTopics

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool


def topic_specs(kafka: KafkaSettings, app_id: str | None = None) -> tuple[TopicSpec, ...]:
    """idsync's topics; with the streams app id, the metaverse engine's own topics too."""
    topics = kafka.topics
    specs = (
        # Keyed by forest/object id: per-object order holds within a partition.
        TopicSpec(topics.changes, kafka.partitions, compacted=False),
        # Latest value per key is all a resuming reader or a resync needs.
        TopicSpec(topics.positions, 1, compacted=True),
        TopicSpec(topics.contacts, kafka.partitions, compacted=True),
        TopicSpec(topics.errors, 1, compacted=False),
        # What is open now: a resolved conflict or a decided delete leaves a record that says so.
        TopicSpec(topics.conflicts, 1, compacted=True),
        TopicSpec(topics.held_deletes, 1, compacted=True),
        # Keyed by member login, and by store/site/login: per-member order holds within a partition.
        TopicSpec(topics.site_changes, kafka.partitions, compacted=False),
        TopicSpec(topics.site_writes, kafka.partitions, compacted=False),
    )
    if app_id is None:
        return specs
    engine = EngineTopics.internal(
        app_id, changes=topics.changes, contacts=topics.contacts, conflicts=topics.conflicts,
        held_deletes=topics.held_deletes, errors=topics.errors,
    )
    # The engine's hops between key spaces: as many partitions as the changes topic, so faust
    # gives partition p of every topic (and table) to one worker.
    return specs + tuple(
        TopicSpec(name, kafka.partitions, compacted=False) for name in (engine.joins, engine.links, engine.persons, engine.deletes, engine.logins)
    ) + (
        # Never written: each reader's lease group needs one partition to assign (streams.kafka.lease).
        TopicSpec(lease_topic(app_id), 1, compacted=False),
    )


async def ensure_topics(kafka: KafkaSettings, app_id: str | None = None) -> None:
    """Create whichever of idsync's topics are missing (with `app_id`, the engine's too);
    existing ones are left as they are."""
    admin = AIOKafkaAdminClient(**client_settings(kafka))
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
            for spec in topic_specs(kafka, app_id)
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
