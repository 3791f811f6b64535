"""ProcessedOffsetCommitter: what it commits, and that the flush comes first."""

from __future__ import annotations

import asyncio

from streams.kafka.offset_commits import ProcessedOffsetCommitter


class Harness:
    def __init__(self) -> None:
        self.processed: dict[int, int] = {}
        self.calls: list[tuple] = []
        self.accept = True

        async def flush() -> None:
            self.calls.append(("flush",))

        async def commit(offsets: dict[int, int]) -> bool:
            self.calls.append(("commit", dict(offsets)))
            return self.accept

        self.committer = ProcessedOffsetCommitter(processed=lambda: dict(self.processed), flush=flush, commit=commit)

    def commit(self, partitions=None) -> list[tuple]:
        self.calls.clear()
        asyncio.run(self.committer.commit(partitions))
        return self.calls


def test_the_producer_is_flushed_before_processed_offsets_are_committed():
    harness = Harness()
    harness.processed.update({0: 5, 1: 2})
    assert harness.commit() == [("flush",), ("commit", {0: 5, 1: 2})]


def test_only_offsets_that_moved_are_committed_and_nothing_is_done_when_none_did():
    harness = Harness()
    harness.processed.update({0: 5, 1: 2})
    harness.commit()
    harness.processed[1] = 3
    assert harness.commit() == [("flush",), ("commit", {1: 3})]
    assert harness.commit() == []


def test_a_refused_commit_is_tried_again_next_time():
    harness = Harness()
    harness.processed[0] = 5
    harness.accept = False
    harness.commit()
    harness.accept = True
    assert harness.commit() == [("flush",), ("commit", {0: 5})]


def test_a_commit_can_be_limited_to_some_partitions():
    harness = Harness()
    harness.processed.update({0: 5, 1: 2, 2: 7})
    assert harness.commit({1, 2}) == [("flush",), ("commit", {1: 2, 2: 7})]
    assert harness.commit() == [("flush",), ("commit", {0: 5})]


def test_a_forgotten_partition_is_committed_again_even_at_the_same_offset():
    # After a revocation the partition may come back; its committed offset may have moved meanwhile.
    harness = Harness()
    harness.processed[0] = 5
    harness.commit()
    harness.committer.forget([0])
    assert harness.commit() == [("flush",), ("commit", {0: 5})]


def test_commits_do_not_overlap_so_an_older_offset_never_lands_after_a_newer_one():
    harness = Harness()
    harness.processed[0] = 5
    first_flush_may_end = asyncio.Event()

    async def slow_first_flush() -> None:
        harness.calls.append(("flush",))
        if len(harness.calls) == 1:
            await first_flush_may_end.wait()

    harness.committer._flush = slow_first_flush

    async def scenario() -> None:
        older = asyncio.create_task(harness.committer.commit())
        await asyncio.sleep(0)  # the older commit read offset 5 and waits in its flush
        harness.processed[0] = 7
        newer = asyncio.create_task(harness.committer.commit())
        await asyncio.sleep(0)
        first_flush_may_end.set()
        await asyncio.gather(older, newer)

    asyncio.run(scenario())
    assert [call for call in harness.calls if call[0] == "commit"] == [("commit", {0: 5}), ("commit", {0: 7})]
