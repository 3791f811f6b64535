"""The metaverse engine: one entry point for every record of the topics it consumes.

Each record is routed by its topic to the stage that owns its key space (the connector space
by source anchor, the join index by join key, persons by person id, the breaker on partition 0);
every stage reads and writes only the table entries of the record's own key, so the state is
partitioned exactly like the topics and several workers of one consumer group split it.
"""

from __future__ import annotations

from streams.events import EventDecodeError, Heartbeat, ReaderCaughtUp, SnapshotMarker, decode_change_topic
from streams.kafka.range_reader import Record
from streams.metaverse_events import (
    CentralBarrier,
    ConnectorState,
    DeleteDecision,
    DeleteRequest,
    DeleteVerdict,
    DeleteWithdrawn,
    ExportAll,
    JoinClaim,
    JoinLink,
    JoinProbe,
    JoinResolve,
    ProbeAnswer,
    decode_engine_event,
)
from streams.monitoring.metrics import STAGE_RECORDS
from streams.processors.logins import LoginStage
from streams.processors.persons import BreakerStage, PersonStage
from streams.processors.profiles import ProfileStage
from streams.processors.space import SpaceStage
from streams.processors.stages import EngineContext
from streams.site_events import LoginClaim, SiteMembership, SiteSnapshotEnd, decode_site_change_topic

# The key of the heartbeats streams/processors/app.py sends to every partition of every topic.
HEARTBEAT_KEY = b"heartbeat"


class MetaverseEngine:
    def __init__(self, context: EngineContext) -> None:
        self._topics = context.settings.topics
        self._space = SpaceStage(context)
        self._profiles = ProfileStage(context)
        self._persons = PersonStage(context, self._profiles)
        self._breaker = BreakerStage(context)
        self._logins = LoginStage(context)

    async def process(self, record: Record) -> tuple[str, str | None] | None:
        """Apply one record. Returns (reason, forest) when it must go to the error topic."""
        STAGE_RECORDS.labels("metaverse-engine").inc()
        try:
            if record.topic == self._topics.changes:
                return await self._on_change_topic(record)
            if record.key == HEARTBEAT_KEY:
                return None
            if record.topic == self._topics.site_changes:
                return await self._on_site_change_topic(record)
            event = decode_engine_event(record.value)
        except EventDecodeError as exc:
            return str(exc), None
        key = record.key or b""
        expected = _EXPECTED.get(self._topic_role(record.topic), ())
        if not isinstance(event, expected):
            return f"{type(event).__name__} does not belong on topic {record.topic}", None
        if record.topic == self._topics.joins:
            await self._space.on_join(key, event)
        elif record.topic == self._topics.links:
            await self._space.on_link(key, event, record.partition)
        elif record.topic == self._topics.logins:
            await self._logins.on_claim(key, event)
        elif isinstance(event, SiteMembership):
            await self._profiles.on_membership(key, event)
        elif record.topic == self._topics.persons:
            await self._persons.on_person_event(key, event, record.partition)
        else:
            await self._breaker.on_delete_event(event)
        return None

    async def _on_change_topic(self, record: Record) -> tuple[str, str | None] | None:
        decoded = decode_change_topic(record.value)
        if isinstance(decoded, Heartbeat):
            return None
        if isinstance(decoded, (SnapshotMarker, ReaderCaughtUp)):
            reason = await self._space.on_marker(decoded, record.partition)
            return (reason, decoded.forest) if reason else None
        if record.key != decoded.key.encode():
            return f"record key does not match its change {decoded.key!r}", decoded.forest
        reason = await self._space.on_change(record.key, decoded, record.partition)
        return (reason, decoded.forest) if reason else None

    async def _on_site_change_topic(self, record: Record) -> tuple[str, str | None] | None:
        decoded = decode_site_change_topic(record.value)
        if isinstance(decoded, SiteSnapshotEnd):
            await self._logins.on_snapshot_end(decoded, record.partition)
            return None
        if record.key != decoded.key():
            return f"record key does not match its member login {decoded.member_login!r}", None
        await self._logins.on_site_change(record.key, decoded)
        return None

    def _topic_role(self, topic: str) -> str:
        topics = self._topics
        return {topics.joins: "joins", topics.links: "links", topics.persons: "persons", topics.deletes: "deletes",
                topics.logins: "logins"}.get(topic, "")


_EXPECTED = {
    "joins": (JoinClaim, JoinResolve, JoinProbe),
    "links": (JoinLink, ProbeAnswer),
    "persons": (ConnectorState, CentralBarrier, ExportAll, DeleteDecision, SiteMembership),
    "logins": (LoginClaim,),
    "deletes": (DeleteRequest, DeleteWithdrawn, DeleteVerdict),
}
