"""What every stage of the metaverse engine shares: its settings, its tables, and how it sends.

The stages (streams/processors/space.py, persons.py) are plain classes over mappings and one
`send` callable, so they run the same under faust (streams/processors/app.py) and in unit
tests that route every message back in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable, MutableMapping, Protocol

from streams.metaverse_events import Conflict
from streams.rules.connector_space import JoinPolicy
from streams.rules.gal import GalPolicy
from streams.rules.profiles import ProfilePolicy

DEFAULT_SITE_CHANGES = "idsync.site-changes"
DEFAULT_SITE_WRITES = "idsync.site-writes"


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineTopics:
    changes: str
    joins: str
    links: str
    persons: str
    deletes: str
    contacts: str
    conflicts: str
    held_deletes: str
    errors: str
    # Person sync: membership changes read from site stores (by login), the engine's login index
    # (by login), and the property writes for the site sinks.
    site_changes: str = DEFAULT_SITE_CHANGES
    logins: str = "idsync-login-claims"
    site_writes: str = DEFAULT_SITE_WRITES

    @classmethod
    def internal(cls, app_id: str, *, changes: str, contacts: str, conflicts: str, held_deletes: str, errors: str,
                 site_changes: str = DEFAULT_SITE_CHANGES, site_writes: str = DEFAULT_SITE_WRITES) -> EngineTopics:
        """The engine's own topics are named after the app, like faust's table changelogs."""
        return cls(
            changes=changes, joins=f"{app_id}-join-claims", links=f"{app_id}-links", persons=f"{app_id}-person-changes",
            deletes=f"{app_id}-delete-requests", contacts=contacts, conflicts=conflicts, held_deletes=held_deletes,
            errors=errors, site_changes=site_changes, logins=f"{app_id}-login-claims", site_writes=site_writes,
        )

    def consumed(self) -> tuple[str, ...]:
        return (self.changes, self.joins, self.links, self.persons, self.deletes, self.site_changes, self.logins)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    topics: EngineTopics
    partitions: int
    central_forest: str
    join: JoinPolicy
    gal: GalPolicy
    delete_limit: int
    delete_window_seconds: float
    sweep_max_fraction: float
    sweep_always_allowed: int
    # Person sync (topology's sites section); None: no site is synchronized.
    profiles: ProfilePolicy | None = None


class Send(Protocol):
    def __call__(self, topic: str, key: bytes, value: bytes | None, partition: int | None = None) -> Awaitable[None]: ...


@dataclass(slots=True, kw_only=True)
class EngineContext:
    settings: EngineSettings
    send: Send
    # The partition a key lives in: the same function the producer uses.
    partition_of: Callable[[bytes], int]
    # Tables: connector space (by anchor), join index (by join key), persons (by person id),
    # and the delete breaker's state and held deletes (by person id, partition 0).
    space: MutableMapping[bytes, bytes]
    index: MutableMapping[bytes, bytes]
    persons: MutableMapping[bytes, bytes]
    breaker: MutableMapping[bytes, bytes]
    clock: Callable[[], float]
    # Person sync: the login index (by login key) and the profile store (by person id).
    logins: MutableMapping[bytes, bytes] = field(default_factory=dict)
    profiles: MutableMapping[bytes, bytes] = field(default_factory=dict)

    async def report_conflict(self, conflict_id: str, kind: str, reason: str, parties: tuple[str, ...], *, open: bool) -> None:
        conflict = Conflict(
            conflict_id=conflict_id, kind=kind, open=open, reason=reason, parties=parties,
            at=datetime.fromtimestamp(self.clock(), timezone.utc).isoformat(),
        )
        await self.send(self.settings.topics.conflicts, conflict_id.encode(), conflict.to_bytes())


def partition_key(name: str, partition: int) -> bytes:
    """A table key for per-partition bookkeeping: faust stores an entry in the partition of the
    event being processed, so the key must name that partition to be unique."""
    return f"__{name}__/{partition}".encode()
