"""What the stream core expects of connectors (readers and writers), whatever they talk to.

The core drives connectors through these contracts and never imports a concrete one.
Errors are split the way a sink must treat them: retry later, or dead-letter and go on; a write
that another entry blocks for now (Blocked) is neither: it is reported as a conflict and retried.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from streams.events import ContactState, DirectoryChange
from streams.site_events import SiteMembershipChange


class ConnectorError(Exception):
    """Base of the errors a connector reports to the core."""


class RetriableError(ConnectorError):
    """The remote side is unavailable or busy: the same call may succeed later."""


class PermanentError(ConnectorError):
    """This record can never be applied as it is: dead-letter it and go on."""


class NotAMember(PermanentError):
    """A profile write for a login the site no longer lists: the member left the site after the
    write was decided. Nothing is wrong with the record, and membership lists are never altered by
    a write, so the sink skips it (it is not dead-lettered)."""


class NeedsAttention(PermanentError):
    """The connection itself is refused for a reason only a person can mend (a certificate that is
    not trusted, StartTLS refused): no record is at fault, so none is dead-lettered; the
    connector says so and tries again now and then."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Blocked:
    """A state that cannot be applied now: the name it needs is held by an entry idsync must not
    take over (a user, an OU, a contact with another mail). Nothing is wrong with the record, so it
    is not dead-lettered: the core reports a conflict and applies the state again later; it
    succeeds once the blocker is gone."""

    reason: str
    # The name the contact needs, and the entry that holds it.
    dn: str
    blocker_dn: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectedRecord:
    """Source data a reader could not turn into an event, kept for the error topic."""

    reason: str
    raw: bytes
    position: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadBatch:
    changes: tuple[DirectoryChange, ...]
    rejected: tuple[RejectedRecord, ...]
    # Where the next read starts once everything above is durable in Kafka.
    position: str | None
    # Every object in scope, as of one moment (a full import): the metaverse may then delete
    # the objects it does not contain.
    is_snapshot: bool = False


class ChangeReader(Protocol):
    forest: str
    mode: str

    async def read(self, position: str | None) -> ReadBatch:
        """Changes after `position`; with no position, a snapshot of every object in scope."""

    async def close(self) -> None: ...


class ContactWriter(Protocol):
    def apply_all(self, states: Sequence[ContactState]) -> list[str | Blocked | PermanentError]:
        """Make the directory match each state, idempotently; per state, what was done, what
        blocks it for now, or why it can never be applied. Raises RetriableError when the target
        is unavailable.

        Blocking: the core calls it from a worker thread.
        """

    def close(self) -> None: ...


# --- Site collections (person sync) -------------------------------------------------------------


class FullReadReason(enum.StrEnum):
    """Why a site's changes cannot be read incrementally from a token: read the membership whole."""

    NO_TOKEN = "no-token"
    # Older than the change log the store still keeps (its retention).
    EXPIRED = "expired"
    # Ahead of the store's newest change: the store was restored from a backup, its tokens went back.
    RESTORED = "restored"


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteChangeBatch:
    """Changes of one site after a token, in order, and the token to read from next. With
    `full_read_needed` set there are no changes: the caller reads the whole membership list
    (SiteSource.members) and resumes from `token`, the store's newest at that moment."""

    site: str
    changes: tuple[SiteMembershipChange, ...]
    token: str
    full_read_needed: FullReadReason | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteMember:
    """One entry of a site's membership list, as the site holds it."""

    login: str
    # The metaverse person this member resolves to; None until the engine resolves it.
    person: str | None
    properties: Mapping[str, str]


class SiteSource(Protocol):
    """Reads the membership lists of one site store. Raises RetriableError when the store is down.

    Blocking: the core calls it from a worker thread.
    """

    def sites(self) -> list[str]: ...

    def changes(self, site: str, token: str | None, limit: int = 1000) -> SiteChangeBatch:
        """At most `limit` changes of `site` after `token`, oldest first. The same token always
        gives the same changes while the store keeps them."""

    def members(self, site: str) -> tuple[list[SiteMember], str]:
        """The whole membership list and the token it is consistent with."""

    def close(self) -> None: ...


class SiteWriter(Protocol):
    """Writes profile properties to members' entries in a site store.

    Blocking: the core calls it from a worker thread.
    """

    def write_properties(self, site: str, login: str, properties: Mapping[str, str]) -> dict[str, str]:
        """Set the given properties (others are left alone) on the member's entry, idempotently;
        returns the properties that changed (empty: nothing was written, nothing logged). Raises
        RetriableError when the store is unavailable, NotAMember when `login` is not a member of
        `site` (membership lists are never altered by a write), PermanentError when the record can
        never be applied."""

    def close(self) -> None: ...
