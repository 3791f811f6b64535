"""A consumer group's health from a sliding window of lag samples, after Burrow's rules.

Burrow (LinkedIn's lag monitor) judges each partition a group consumes over its last few offset
commits, without a lag threshold, and gives the group the worst partition's status. idsync samples
instead of reading commits (committed offset, log-end offset and whether a member of the group
owns the partition, every few seconds), so its rules read Burrow's over samples:

1. OK when the lag is zero now or was zero in any sample of the window.
2. REWIND (the group: ERR) when the committed offset moved back between two samples.
3. STOP when the committed offset did not move over the window and no member of the group owns
   the partition: nobody is there to commit (Burrow: no commit for longer than the window spans).
4. STALL when the committed offset did not move over the window while a member owns the
   partition: the consumer is there but makes no progress (Burrow: commits that do not move).
5. WARN when the offset moved but the lag never fell between two samples: the consumer is slower
   than what is produced.
6. OK otherwise.

Rules 3-5 need two samples or more; a window of one sample says OK or REWIND only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    OK = "OK"
    WARN = "WARN"
    STOP = "STOP"
    STALL = "STALL"
    REWIND = "REWIND"  # a partition's status; the group's is ERR
    ERR = "ERR"  # a group that rewound or cannot be read

    def __str__(self) -> str:
        return self.value


# A group is as bad as its worst partition.
_SEVERITY = {Status.OK: 0, Status.WARN: 1, Status.STOP: 2, Status.STALL: 3, Status.REWIND: 4, Status.ERR: 4}


@dataclass(frozen=True, slots=True)
class Sample:
    """One partition at one moment: the group's committed offset (None: it never committed one),
    its lag in records, and whether a member of the group owns the partition."""

    at: float
    offset: int | None
    lag: int
    owned: bool


def partition_status(window: Sequence[Sample]) -> Status:
    """The partition's status over `window`, oldest sample first."""
    if not window or any(sample.lag == 0 for sample in window):
        return Status.OK
    pairs = list(zip(window, window[1:]))
    if any(_before(after.offset, before.offset) for before, after in pairs):
        return Status.REWIND
    if not pairs:
        return Status.OK
    if all(before.offset == after.offset for before, after in pairs):
        return Status.STALL if window[-1].owned else Status.STOP
    if all(after.lag >= before.lag for before, after in pairs):
        return Status.WARN
    return Status.OK


def group_status(statuses: Iterable[Status]) -> Status:
    """The worst partition status; a rewind makes the group ERR, as in Burrow."""
    worst = max(statuses, key=_SEVERITY.__getitem__, default=Status.OK)
    return Status.ERR if worst is Status.REWIND else worst


def _before(offset: int | None, earlier: int | None) -> bool:
    return offset is not None and earlier is not None and offset < earlier


class LagWindow:
    """The last `size` samples of every partition it was given, by any hashable key
    (e.g. (group, topic, partition))."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a window holds at least one sample, not {size}")
        self._size = size
        self._samples: dict[Hashable, deque[Sample]] = {}

    def add(self, key: Hashable, sample: Sample) -> None:
        self._samples.setdefault(key, deque(maxlen=self._size)).append(sample)

    def samples(self, key: Hashable) -> tuple[Sample, ...]:
        return tuple(self._samples.get(key, ()))

    def status(self, key: Hashable) -> Status:
        return partition_status(self.samples(key))

    def span(self, key: Hashable) -> float:
        """Seconds from the key's oldest sample in the window to its newest."""
        samples = self._samples.get(key)
        return samples[-1].at - samples[0].at if samples else 0.0
