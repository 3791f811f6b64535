"""The metaverse processor's offset bookkeeping: records reach the engine exactly once and in
offset order per topic and partition, whatever faust skipped or delivered again."""

from __future__ import annotations

import asyncio

from streams.kafka.range_reader import Record
from streams.processors.metaverse import MetaverseProcessor


class Harness:
    """`log` plays the topics (a list of records per topic and partition); the engine is a list."""

    def __init__(self) -> None:
        self.committed: dict[tuple[str, int], int] = {}  # absent: the start of the partition
        self.handled: list[tuple[str, int, int]] = []
        self.letters: list[tuple[str, int]] = []
        self.log: dict[tuple[str, int], list[Record]] = {}

        async def handle(record):
            self.handled.append((record.topic, record.partition, record.offset))
            return ("bad record", "forest-a") if record.value == b"garbage" else None

        async def dead_letter(record, reason, forest):
            self.letters.append((reason, record.offset))

        async def start_offset(topic, partition):
            return self.committed.get((topic, partition), 0)

        async def read_range(topic, partition, start, stop):
            return [r for r in self.log.get((topic, partition), []) if start <= r.offset < stop]

        self.processor = MetaverseProcessor(
            handle=handle, dead_letter=dead_letter, start_offset=start_offset, read_range=read_range
        )

    def append(self, value: bytes = b"v", *, topic: str = "changes", partition: int = 0) -> Record:
        records = self.log.setdefault((topic, partition), [])
        record = Record(b"k", value, topic, partition, len(records))
        records.append(record)
        return record

    def feed(self, value: bytes = b"v", *, topic: str = "changes", partition: int = 0) -> None:
        asyncio.run(self.processor.process(self.append(value, topic=topic, partition=partition)))

    def offsets(self, topic: str = "changes", partition: int = 0) -> list[int]:
        return [o for t, p, o in self.handled if (t, p) == (topic, partition)]


def test_records_skipped_before_the_current_one_are_re_read_and_processed_first():
    harness = Harness()
    harness.feed()
    harness.append()  # delivered to nobody, as when faust skips a record
    harness.append(b"garbage")
    harness.feed()
    assert harness.offsets() == [0, 1, 2, 3]
    assert harness.letters == [("bad record", 2)]  # dead-lettered with its own offset
    assert harness.processor.processed() == {("changes", 0): 4}


def test_records_skipped_before_the_first_delivered_one_are_re_read_from_the_committed_offset():
    harness = Harness()
    for _ in range(3):
        harness.append()
    harness.committed[("changes", 0)] = 1  # offset 0 was processed by the previous worker
    harness.feed()  # faust delivers from here: 1 and 2 were skipped
    assert harness.offsets() == [1, 2, 3]


def test_records_before_the_processed_offset_are_dropped():
    harness = Harness()
    harness.feed()
    harness.feed()
    asyncio.run(harness.processor.process(harness.log[("changes", 0)][0]))
    assert harness.offsets() == [0, 1] and harness.processor.processed() == {("changes", 0): 2}


def test_a_forgotten_partition_starts_again_at_its_committed_offset():
    harness = Harness()
    harness.feed()
    harness.feed()
    harness.processor.forget([("changes", 0)])
    harness.committed[("changes", 0)] = 1
    harness.handled.clear()
    harness.feed()
    assert harness.offsets() == [1, 2] and harness.processor.processed() == {("changes", 0): 3}


def test_each_topic_and_partition_is_tracked_on_its_own():
    harness = Harness()
    harness.feed(topic="changes", partition=1)
    harness.feed(topic="links", partition=1)
    harness.append(topic="links", partition=1)
    harness.feed(topic="links", partition=1)
    assert harness.offsets("links", 1) == [0, 1, 2] and harness.offsets("changes", 1) == [0]
    assert harness.processor.processed() == {("changes", 1): 1, ("links", 1): 3}
