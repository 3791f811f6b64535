"""The source runner's bookkeeping, with a scripted reader and publisher: it reads ahead while Kafka
acknowledges, saves a position only once everything up to it is acknowledged, and after any
failure reads again from the newest acknowledged position."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaTimeoutError

import streams.processors.source_runner as source_runner
from streams.config.topology import Topics
from streams.contracts import PermanentError, ReadBatch
from streams.events import ReaderPosition
from streams.processors.source_runner import SourceRunner


class ScriptedReader:
    """Batch n has position "n"; read(p) continues from p, as the real readers do."""

    forest, mode = "forest-u", "accesslog-sync"

    def __init__(self, failures: dict[int, Exception] | None = None) -> None:
        self.reads: list[str | None] = []
        self._failures = failures or {}

    async def read(self, position: str | None) -> ReadBatch:
        self.reads.append(position)
        await asyncio.sleep(0)
        if failure := self._failures.pop(len(self.reads), None):
            raise failure
        following = int(position or 0) + 1
        return ReadBatch(changes=(), rejected=(), position=str(following))

    async def close(self) -> None:
        pass


class ControlledPublisher:
    """send() hands out an acknowledgement the test completes (or fails) itself."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future] = []
        self.caught_up = 0

    async def publish_caught_up(self) -> None:
        self.caught_up += 1

    async def send(self, batch: ReadBatch) -> asyncio.Future:
        self.acks.append(asyncio.get_running_loop().create_future())
        return self.acks[-1]


class Positions:
    def __init__(self, stored: str | None = None) -> None:
        self.saved: list[str] = []
        self._stored = stored

    async def load(self, reader: str) -> ReaderPosition | None:
        return None if self._stored is None else ReaderPosition(reader=reader, mode="accesslog-sync", position=self._stored)

    async def save(self, position: ReaderPosition) -> None:
        self.saved.append(position.position)


def runner(reader: ScriptedReader, positions: Positions, publisher: ControlledPublisher, *, started: bool = True) -> SourceRunner:
    """`started`: past the first read (whose caught-up marker the last test covers)."""
    topics = Topics(changes="c", positions="p", contacts="k", errors="e")
    built = SourceRunner(reader, producer=None, positions=positions, topics=topics)  # type: ignore[arg-type]
    built._publisher = publisher  # type: ignore[assignment]
    built._caught_up = started
    return built


async def until(condition, what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{what} never happened")


async def until_async(condition) -> None:
    while not condition():
        await asyncio.sleep(0.005)


async def test_reads_ahead_but_saves_only_what_kafka_acknowledged_in_order() -> None:
    reader, positions, publisher = ScriptedReader(), Positions(stored="0"), ControlledPublisher()
    task = asyncio.create_task(runner(reader, positions, publisher).run())
    try:
        # Four batches go out unacknowledged; the runner waits for the oldest before a fifth.
        await until(lambda: len(publisher.acks) == 4, "four batches in flight")
        for _ in range(20):
            await asyncio.sleep(0)
        assert reader.reads == ["0", "1", "2", "3"] and positions.saved == []
        publisher.acks[1].set_result(None)  # the second is acknowledged before the first
        for _ in range(20):
            await asyncio.sleep(0)
        assert positions.saved == []
        publisher.acks[0].set_result(None)
        await until(lambda: positions.saved, "a saved position")
        assert positions.saved[0] == "2"  # both at once, and never "1" after "2"
        await until(lambda: len(publisher.acks) == 6, "two more batches read")
    finally:
        task.cancel()


async def test_a_refused_batch_is_read_again_from_the_last_acknowledged_position() -> None:
    reader, positions, publisher = ScriptedReader(), Positions(stored="0"), ControlledPublisher()
    task = asyncio.create_task(runner(reader, positions, publisher).run())
    try:
        await until(lambda: len(publisher.acks) == 4, "four batches in flight")
        publisher.acks[0].set_result(None)
        publisher.acks[1].set_exception(KafkaTimeoutError())
        publisher.acks[2].set_result(None)
        # After the first backoff (0.2 s at most) the reader is asked for what followed "1".
        await asyncio.wait_for(until_async(lambda: "1" in reader.reads[4:]), timeout=5)
        assert positions.saved == ["1"]
        assert reader.reads[4] == "1"
    finally:
        task.cancel()


async def test_a_permanent_error_is_retried_and_loses_nothing(monkeypatch) -> None:
    monkeypatch.setattr(source_runner, "_PERMANENT_RETRY_SECONDS", 0.01)
    reader = ScriptedReader(failures={2: PermanentError("insufficient access")})
    positions, publisher = Positions(stored="0"), ControlledPublisher()
    task = asyncio.create_task(runner(reader, positions, publisher).run())
    try:
        await asyncio.wait_for(until_async(lambda: len(reader.reads) >= 3), timeout=5)
        # The failed read came after batch "1" was sent, not acknowledged: read again from "0".
        assert reader.reads[:3] == ["0", "1", "0"]
    finally:
        task.cancel()


async def test_the_first_read_is_acknowledged_then_marked_caught_up_once() -> None:
    reader, positions, publisher = ScriptedReader(), Positions(stored="0"), ControlledPublisher()
    task = asyncio.create_task(runner(reader, positions, publisher, started=False).run())
    try:
        await until(lambda: len(publisher.acks) == 1, "the first batch")
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(publisher.acks) == 1 and publisher.caught_up == 0  # waits for Kafka first
        publisher.acks[0].set_result(None)
        await until(lambda: publisher.caught_up == 1 and len(publisher.acks) == 5, "marker, then read-ahead")
        assert positions.saved == ["1"]
        for ack in publisher.acks[1:]:
            ack.set_result(None)
        await until(lambda: len(publisher.acks) >= 8, "more batches")
        assert publisher.caught_up == 1
    finally:
        task.cancel()


async def test_a_batch_kafka_acknowledges_as_a_read_fails_is_not_read_again() -> None:
    from streams.contracts import RetriableError

    reader = ScriptedReader(failures={3: RetriableError("the directory went away")})
    positions, publisher = Positions(stored="0"), ControlledPublisher()
    task = asyncio.create_task(runner(reader, positions, publisher).run())
    try:
        await until(lambda: len(publisher.acks) == 2, "two batches in flight")
        await until(lambda: len(reader.reads) == 3, "the failing read")
        publisher.acks[0].set_result(None)
        publisher.acks[1].set_result(None)  # acknowledged just after the read failed
        await asyncio.wait_for(until_async(lambda: len(reader.reads) >= 4), timeout=5)
        assert positions.saved[-1] == "2" and reader.reads[3] == "2"
    finally:
        task.cancel()
