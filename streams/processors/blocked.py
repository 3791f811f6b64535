"""Contact states whose write is blocked (their name is held by an entry idsync must not take
over), kept for retrying with backoff and holding back their partition's committed offset.

One per contact (anchor): a newer state of the same contact replaces the blocked one, and is the
one retried. Pure bookkeeping; the sink runner does the writing and the committing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Collection, Protocol

from streams.contracts import Blocked
from streams.events import ContactState


class Position(Protocol):
    """Where a record was read (an aiokafka ConsumerRecord or TopicPartition has these)."""

    topic: str
    partition: int


class StateRecord(Position, Protocol):
    offset: int


@dataclass(slots=True, kw_only=True)
class BlockedContact:
    record: StateRecord
    state: ContactState
    blocked: Blocked
    # Seconds between the last attempt and the next one.
    delay: float
    due: float


class BlockedContacts:
    def __init__(self, *, first_delay: float = 5.0, max_delay: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._first = first_delay
        self._max = max_delay
        self._clock = clock
        self._by_anchor: dict[str, BlockedContact] = {}

    def __len__(self) -> int:
        return len(self._by_anchor)

    def __contains__(self, anchor: object) -> bool:
        return anchor in self._by_anchor

    def block(self, record: StateRecord, state: ContactState, blocked: Blocked) -> BlockedContact:
        """Keep `state` for a retry: after `first_delay` for a state not tried before, else
        after twice the last wait, up to `max_delay`."""
        current = self._by_anchor.get(state.anchor)
        retried = current is not None and _same_record(current.record, record)
        delay = min(self._max, current.delay * 2) if retried and current is not None else self._first
        entry = BlockedContact(record=record, state=state, blocked=blocked, delay=delay, due=self._clock() + delay)
        self._by_anchor[state.anchor] = entry
        return entry

    def release(self, anchor: str) -> BlockedContact | None:
        return self._by_anchor.pop(anchor, None)

    def due(self) -> list[BlockedContact]:
        """The blocked contacts whose next attempt has come, oldest record first."""
        now = self._clock()
        return sorted((e for e in self._by_anchor.values() if e.due <= now), key=lambda e: (e.record.partition, e.record.offset))

    def floor(self, partition: Position) -> int | None:
        """The offset of the oldest record still blocked on `partition`: no commit may pass it."""
        offsets = [e.record.offset for e in self._by_anchor.values() if _same_partition(e.record, partition)]
        return min(offsets, default=None)

    def keep_partitions(self, assigned: Collection[Position]) -> list[BlockedContact]:
        """Forget the contacts of partitions no longer assigned (their next owner reads them
        again from the committed offset); returns those forgotten."""
        gone = [e for e in self._by_anchor.values() if not any(_same_partition(e.record, p) for p in assigned)]
        for entry in gone:
            del self._by_anchor[entry.state.anchor]
        return gone


def _same_partition(left: Position, right: Position) -> bool:
    return left.topic == right.topic and left.partition == right.partition


def _same_record(left: StateRecord, right: StateRecord) -> bool:
    return _same_partition(left, right) and left.offset == right.offset
