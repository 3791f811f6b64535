"""Reader leases against the real broker (streams/kafka/lease.py): one holder at a time, a lease
that stays with its holder when other workers join, and moves to a survivor when its holder goes."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.kafka.lease import run_while_held

pytestmark = pytest.mark.integration

SESSION_SECONDS = 6.0  # the broker's smallest session timeout


class Members:
    """Members of one lease group, each with its work: recording who runs it, and checking that
    no two ever run it at once."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic, self.group = bootstrap, topic, f"{topic}-group"
        self.running: set[str] = set()
        self.starts: list[str] = []
        self.tasks: dict[str, asyncio.Task] = {}

    def join(self, name: str) -> None:
        async def work() -> None:
            assert not self.running, f"{name} starts while {self.running} runs"
            self.running.add(name)
            self.starts.append(name)
            try:
                await asyncio.Event().wait()
            finally:
                self.running.discard(name)

        self.tasks[name] = asyncio.create_task(run_while_held(
            self.bootstrap, topic=self.topic, group=self.group, lease="test",
            session_timeout_seconds=SESSION_SECONDS, work=work))

    async def leave(self, name: str) -> None:
        task = self.tasks.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def group_size(self) -> int:
        """The group's member count once it is stable (-1 while it rebalances)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            [described] = await admin.describe_consumer_groups([self.group])
            (_error, _group, state, _protocol_type, _protocol, group_members, *_) = described.groups[0]
            return len(group_members) if state == "Stable" else -1
        finally:
            await admin.close()

    async def settled(self, size: int, timeout: float = 60.0) -> str:
        """The one member running the work once the group has `size` members and is stable."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for task in self.tasks.values():
                if task.done():
                    task.result()
            if await self.group_size() == size and len(self.running) == 1:
                return next(iter(self.running))
            await asyncio.sleep(0.2)
        raise AssertionError(f"no single holder among {size} members in {timeout} s; running: {self.running}")

    async def close(self) -> None:
        for name in list(self.tasks):
            await self.leave(name)


@pytest.fixture
async def members(kafka_broker):
    topic = f"leases-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    group = Members(kafka_broker.bootstrap_servers, topic)
    try:
        yield group
    finally:
        await group.close()


async def test_a_lease_stays_with_its_holder_as_workers_join_and_moves_once_when_it_leaves(members: Members) -> None:
    members.join("first")
    assert await members.settled(1) == "first"
    for name in ("second", "third", "fourth"):
        members.join(name)
        assert await members.settled(len(members.tasks)) == "first", f"{name} joined and took the lease"
    assert set(members.starts) == {"first"}

    await members.leave("first")
    survivor = await members.settled(3)
    assert survivor == "second", "the member that joined first of the survivors takes it"
    members.join("first")  # back again: it joined last now
    assert await members.settled(4) == "second"
    # Every rebalance stops the work and starts it again (Kafka's eager protocol), on the same member.
    assert {name for name in members.starts if name != "first"} == {"second"}
