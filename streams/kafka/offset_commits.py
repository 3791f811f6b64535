"""Committing the engine's topics' offsets from what the metaverse processor finished.

faust 0.15's own commits follow a list of acknowledged offsets that its gap bookkeeping can
break: after it skipped records while a worker recovered, a partition's commits crept forward
one offset at a time or stopped for good, while processing went on. The changes topic is
therefore consumed without faust acks, and this committer commits what the processor reports
as processed, after the producer flushed everything processing sent (table changelog, contact
states, dead letters): at-least-once, with an offset that is never ahead of durable work.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Hashable, Iterable

log = logging.getLogger(__name__)


class ProcessedOffsetCommitter:
    def __init__(
        self,
        *,
        processed: Callable[[], dict[Hashable, int]],
        flush: Callable[[], Awaitable[None]],
        commit: Callable[[dict[Hashable, int]], Awaitable[bool]],
    ) -> None:
        """`processed()` maps a partition (of one topic, or a (topic, partition) pair) -> offset before which everything is processed; `commit`
        commits such a mapping for the consumer group and says whether the broker accepted it."""
        self._processed = processed
        self._flush = flush
        self._commit = commit
        self._committed: dict[Hashable, int] = {}
        # One commit at a time (the timer's and a revocation's): a slower, older one must not
        # land after a newer one and move an offset back.
        self._lock = asyncio.Lock()

    async def commit(self, partitions: Iterable[Hashable] | None = None) -> None:
        """Commit the partitions (all by default) whose processed offset moved since the last commit."""
        wanted = None if partitions is None else set(partitions)
        async with self._lock:
            due = {
                partition: offset
                for partition, offset in self._processed().items()
                if (wanted is None or partition in wanted) and self._committed.get(partition) != offset
            }
            if not due:
                return
            # Read before the flush: whatever processing sends from now on is not covered by `due`.
            await self._flush()
            if await self._commit(due):
                self._committed.update(due)
            else:
                log.info("offset commit not accepted, retried at the next one offsets=%s", due)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        for partition in partitions:
            self._committed.pop(partition, None)
