"""What the stream core expects of connectors (readers and writers), whatever they talk to.

The core drives connectors through these contracts and never imports a concrete one.
Errors are split the way a sink must treat them: retry later, or dead-letter and go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from streams.events import ContactState, DirectoryChange


class ConnectorError(Exception):
    """Base of the errors a connector reports to the core."""


class RetriableError(ConnectorError):
    """The remote side is unavailable or busy: the same call may succeed later."""


class PermanentError(ConnectorError):
    """This record can never be applied as it is: dead-letter it and go on."""


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
    def apply_all(self, states: Sequence[ContactState]) -> list[str | PermanentError]:
        """Make the directory match each state, idempotently; per state, what was done or why
        it can never be applied. Raises RetriableError when the target is unavailable.

        Blocking: the core calls it from a worker thread.
        """

    def close(self) -> None: ...
