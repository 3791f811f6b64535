"""Versioned events of person sync (seed 004): site collections' membership lists up, profile
properties down.

| topic | key | events |
| --- | --- | --- |
| ``kafka.topics.site_changes`` | ``login:<member login, casefolded>`` | site-membership-change; site-snapshot-end on every partition |
| ``<app_id>-login-claims`` | ``login:<login, casefolded>`` | login-claim |
| ``<app_id>-person-changes`` | person id | site-membership (beside the metaverse's events) |
| ``kafka.topics.site_writes`` | ``<store>/<site>/<login>`` | site-write |
| ``kafka.topics.positions`` | ``site/<store>/<site>`` | site-sync-state (the membership reader's token) |

Same conventions as streams/metaverse_events.py: orjson objects with ``schema`` and ``version``;
a field added later with a default keeps version 1.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping

from streams.events import EventDecodeError, check_schema, parse
from streams.metaverse_events import FieldEvent, register_converter, register_engine_event

Properties = Mapping[str, str]


def _properties(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise TypeError("'properties' must be an object of strings")
    return dict(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a non-empty string, got {value!r}")
    return value


register_converter("Properties", _properties)
register_converter("NonEmpty", _text)
NonEmpty = str


def login_key(login: str) -> bytes:
    """The key of everything about one login: logins compare without case (DOMAIN\\user, UPNs and
    mail addresses all do), and the prefix keeps a login from ever equalling a control key."""
    return f"login:{login.casefold()}".encode()


class MembershipOp(enum.StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    PROPERTIES_CHANGED = "properties-changed"


register_converter("MembershipOp", MembershipOp)


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteMembershipChange(FieldEvent):
    """One entry of a site's change log: a member added or removed, or the site's copy of a
    member's profile properties changed. `change_token` is the store's opaque resume position
    just after this change. A full read publishes every member as ADDED with its `snapshot_id`."""

    SCHEMA = "idsync.site-membership-change"
    site: NonEmpty
    member_login: NonEmpty
    op: MembershipOp
    change_token: NonEmpty
    # ISO 8601, UTC, as the store recorded it.
    changed_at: NonEmpty
    # The member's properties as the site holds them after the change (empty for REMOVED).
    properties: Properties
    # The site store (topology's sites.stores[].name); the store itself does not know it.
    store: str = ""
    snapshot_id: str | None = None

    @property
    def site_id(self) -> str:
        return f"{self.store}/{self.site}"

    def key(self) -> bytes:
        return login_key(self.member_login)


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteSnapshotEnd(FieldEvent):
    """Closes a full read of one site, on every partition: the memberships of the site that the
    read did not publish (another snapshot id, or none) are gone."""

    SCHEMA = "idsync.site-snapshot-end"
    store: NonEmpty
    site: NonEmpty
    snapshot_id: NonEmpty
    token: str
    reason: str
    members: int

    @property
    def site_id(self) -> str:
        return f"{self.store}/{self.site}"


class SyncMode(enum.StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteSyncState(FieldEvent):
    """Where the membership reader of a site goes on from (`token`, saved only once Kafka holds
    what came before it), and what its last synchronization was: full or incremental, when, why."""

    SCHEMA = "idsync.site-sync-state"
    store: NonEmpty
    site: NonEmpty
    token: str
    mode: str
    reason: str
    at: str
    # Changes (incremental) or members (full) that synchronization published.
    changes: int
    last_full_at: str | None = None
    last_full_reason: str | None = None

    def key(self) -> bytes:
        return site_position_key(self.store, self.site)


def site_position_key(store: str, site: str) -> bytes:
    return f"site/{store}/{site}".encode()


class ClaimState(enum.StrEnum):
    # The person has sources: its login resolves to it.
    LIVE = "live"
    # The person left the environment (no source in any forest): still resolves, flagged.
    DEPARTED = "departed"
    # The person no longer has this login.
    WITHDRAWN = "withdrawn"


register_converter("ClaimState", ClaimState)


@register_engine_event
@dataclass(frozen=True, slots=True, kw_only=True)
class LoginClaim(FieldEvent):
    """A person says which logins are theirs (streams/rules/profiles.py login rules)."""

    SCHEMA = "idsync.login-claim"
    login: NonEmpty
    person: NonEmpty
    state: ClaimState
    at: str


@register_engine_event
@dataclass(frozen=True, slots=True, kw_only=True)
class SiteMembership(FieldEvent):
    """The login stage tells a person that it is (or no longer is) a member of a site, with the
    properties the site holds for it."""

    SCHEMA = "idsync.site-membership"
    person: NonEmpty
    store: NonEmpty
    site: NonEmpty
    login: NonEmpty
    present: bool
    properties: Properties

    @property
    def site_id(self) -> str:
        return f"{self.store}/{self.site}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteWrite(FieldEvent):
    """Properties to set on one member's entry of one site (only these; others are left alone)."""

    SCHEMA = "idsync.site-write"
    store: NonEmpty
    site: NonEmpty
    login: NonEmpty
    person: NonEmpty
    properties: Properties
    reason: str
    # The newest source change behind it, for the latency metric.
    changed_at: str | None = None

    def key(self) -> bytes:
        return f"{self.store}/{self.site}/{self.login}".encode()


def decode_site_change_topic(raw: bytes | None) -> SiteMembershipChange | SiteSnapshotEnd:
    """A record of the site-changes topic; EventDecodeError says why not."""
    data = parse(raw)
    for kind in (SiteMembershipChange, SiteSnapshotEnd):
        if data.get("schema") == kind.SCHEMA:
            check_schema(data, kind)
            return kind.from_dict(data)
    raise EventDecodeError(f"unknown schema {data.get('schema')!r} on the site-changes topic")
