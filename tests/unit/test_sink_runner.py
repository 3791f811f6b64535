"""The sink runner's handling of blocked writes, with a writer, consumer and producer in memory:
conflicts opened and closed, retries with the latest state, commits held back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from streams.config.topology import Topics
from streams.contracts import Blocked, NeedsAttention, PermanentError
from streams.events import ContactState
from streams.metaverse_events import Conflict
from streams.processors import sink_runner
from streams.processors.sink_runner import SinkRunner

TOPIC = "contacts"
P0 = TopicPartition(TOPIC, 0)
TOPICS = Topics(changes="changes", positions="positions", contacts=TOPIC, errors="errors")
BLOCKER = "uid=ada,ou=people,dc=central,dc=test"


def present(anchor: str, name: str = "Ada") -> ContactState:
    return ContactState(anchor=anchor, present=True, container_dn="ou=c,dc=x", dn=f"cn={name},ou=c,dc=x")


class Writer:
    def __init__(self) -> None:
        self.blocked_names: set[str] = set()
        self.rejected: set[str] = set()
        self.applied: list[ContactState] = []

    def apply_all(self, states):
        results = []
        for state in states:
            self.applied.append(state)
            if state.anchor in self.rejected:
                results.append(PermanentError("bad"))
            elif state.present and state.dn in self.blocked_names:
                results.append(Blocked(reason="held by a user", dn=state.dn, blocker_dn=BLOCKER))
            else:
                results.append("created" if state.present else "absent")
        return results

    def close(self) -> None: ...


class Consumer:
    def __init__(self) -> None:
        self.queue: list[ContactState] = []
        self.next_offset = 0
        self.commits: list[int] = []

    def send(self, *states: ContactState) -> None:
        self.queue.extend(states)

    async def getmany(self, timeout_ms: int, max_records: int):
        if not self.queue:
            await asyncio.sleep(0.01)
            return {}
        records = []
        for state in self.queue:
            records.append(ConsumerRecord(TOPIC, 0, self.next_offset, 0, 0, state.anchor.encode(), state.to_bytes(),
                                          None, 0, 0, ()))
            self.next_offset += 1
        self.queue = []
        return {P0: records}

    def assignment(self):
        return {P0}

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits.append(offsets[P0])


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send_and_wait(self, topic: str, key: bytes, value: bytes, headers=None) -> None:
        self.sent.append((topic, key, value))

    def conflicts(self) -> list[Conflict]:
        return [Conflict.from_bytes(value) for topic, _, value in self.sent if topic == "conflicts"]


class Rig:
    def __init__(self, open_conflicts: Mapping[str, Conflict] | None = None) -> None:
        self.writer, self.consumer, self.producer = Writer(), Consumer(), Producer()

        async def read_open() -> Mapping[str, Conflict]:
            return open_conflicts or {}

        self.runner = SinkRunner(
            self.writer, consumer=self.consumer, producer=self.producer, topics=TOPICS, conflicts_topic="conflicts",
            open_conflicts=read_open, retry_first_seconds=0.05, retry_max_seconds=0.1,
        )

    async def until(self, condition: Callable[[], bool], timeout: float = 3) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, "condition not reached"
            await asyncio.sleep(0.01)


@pytest.fixture
async def rig():
    rig = Rig()
    task = asyncio.create_task(rig.runner.run())
    try:
        yield rig
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_blocked_write_opens_a_conflict_holds_the_commit_and_closes_it_once_applied(rig: Rig) -> None:
    rig.writer.blocked_names.add(present("p2").dn)
    rig.consumer.send(present("p1", "Bob"), present("p2"), present("p3", "Cy"))
    await rig.until(lambda: rig.producer.conflicts())
    [opened] = rig.producer.conflicts()
    assert (opened.conflict_id, opened.kind, opened.open, opened.parties) == ("dn:p2", "dn-taken", True, ("p2", BLOCKER))
    assert rig.consumer.commits == [1]  # not past p2's record, offset 1

    # Retried with backoff, without more conflict records while nothing changes.
    await rig.until(lambda: sum(s.anchor == "p2" for s in rig.writer.applied) >= 3)
    assert len(rig.producer.conflicts()) == 1 and rig.consumer.commits == [1]

    rig.writer.blocked_names.clear()  # the blocker went
    await rig.until(lambda: len(rig.producer.conflicts()) == 2)
    closed = rig.producer.conflicts()[1]
    assert (closed.conflict_id, closed.open, closed.parties) == ("dn:p2", False, ("p2", BLOCKER))
    await rig.until(lambda: rig.consumer.commits[-1] == 3)


async def test_a_newer_state_replaces_the_blocked_one(rig: Rig) -> None:
    rig.writer.blocked_names.add(present("p2").dn)
    rig.consumer.send(present("p2"))
    await rig.until(lambda: rig.producer.conflicts())
    # Renamed to a name that is held too: the retry is of the new state, the commit moves to it.
    rig.writer.blocked_names.add(present("p2", "Ada L").dn)
    rig.consumer.send(present("p1", "Bob"), present("p2", "Ada L"))
    await rig.until(lambda: rig.consumer.commits[-1] == 2)
    rig.writer.applied.clear()
    await rig.until(lambda: any(s.anchor == "p2" for s in rig.writer.applied))
    assert {s.dn for s in rig.writer.applied if s.anchor == "p2"} == {present("p2", "Ada L").dn}

    # The person is deleted meanwhile: nothing to write, the conflict is over.
    rig.consumer.send(ContactState(anchor="p2", present=False, container_dn=""))
    await rig.until(lambda: not rig.producer.conflicts()[-1].open)
    assert rig.consumer.commits[-1] == 4


async def test_permanent_errors_are_still_dead_lettered(rig: Rig) -> None:
    rig.writer.rejected.add("p1")
    rig.consumer.send(present("p1"))
    await rig.until(lambda: rig.consumer.commits == [1])
    assert [topic for topic, _, _ in rig.producer.sent] == ["errors"]


async def test_a_conflict_open_before_a_restart_is_closed_when_the_contact_is_written() -> None:
    before = Conflict(conflict_id="dn:p2", kind="dn-taken", open=True, reason="held", parties=("p2", BLOCKER),
                      at="2026-12-01T00:00:00+00:00")
    rig = Rig({"dn:p2": before})
    task = asyncio.create_task(rig.runner.run())
    try:
        rig.consumer.send(present("p1", "Bob"), present("p2"))
        await rig.until(lambda: rig.producer.conflicts())
        [closed] = rig.producer.conflicts()
        assert (closed.conflict_id, closed.open, closed.parties) == ("dn:p2", False, ("p2", BLOCKER))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_connection_that_needs_attention_holds_the_batch_and_dead_letters_nothing(monkeypatch, caplog) -> None:
    monkeypatch.setattr(sink_runner, "ATTENTION_RETRY_SECONDS", 0.05)
    rig = Rig()
    refusals = iter([NeedsAttention("forest central: certificate not accepted")] * 2)
    apply_all = rig.writer.apply_all

    def refused_twice(states):
        if (refusal := next(refusals, None)) is not None:
            raise refusal
        return apply_all(states)

    rig.writer.apply_all = refused_twice
    task = asyncio.create_task(rig.runner.run())
    try:
        rig.consumer.send(present("p1"))
        await rig.until(lambda: rig.consumer.commits == [1])
        assert rig.producer.sent == [] and [s.anchor for s in rig.writer.applied] == ["p1"]
        assert sum("contact writer needs attention" in r.getMessage() for r in caplog.records) == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
