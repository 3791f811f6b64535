"""`idsync lag`: per consumer group of idsync, topic and partition, the committed offset, the
log-end offset, the lag in records and in seconds, and the group's status by Burrow's rules
(streams/monitoring/lag_status.py) over a sliding window of samples."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import orjson
from aiokafka.errors import KafkaError

from idsync.kafka_clients import client_options
from idsync.operations import table
from streams.config.metaverse import engine_settings
from streams.config.topology import Topology
from streams.kafka.group_lag import GroupLagReader, GroupOffsets, GroupReadError
from streams.monitoring.lag_status import LagWindow, Sample, Status, group_status

# One invocation: this many samples, this many seconds apart, judged together.
SAMPLES, INTERVAL = 3, 1.0
# --watch: a longer window (Burrow keeps 10 commits), a sample every few seconds.
WATCH_SAMPLES, WATCH_INTERVAL = 10, 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    log_end: int
    lag: int
    lag_seconds: float
    status: Status
    owner: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupLag:
    group: str
    status: Status
    state: str | None
    members: int
    lag: int
    lag_seconds: float
    samples: int
    window_seconds: float
    error: str | None
    partitions: tuple[PartitionLag, ...]


def watched_groups(topology: Topology) -> list[tuple[str, tuple[str, ...]]]:
    """idsync's consumer groups and their topics: the faust app (its group is the app id) on the
    topics of the metaverse engine, the contact writer on the contacts topic, and with a sites
    section each site store's writer on the site-writes topic."""
    from idsync.runtime import contact_writer_group
    from idsync.site_components import site_writer_groups

    topics = engine_settings(topology).topics
    return [(topology.streams.app_id, tuple(topics.consumed())), (contact_writer_group(topology), (topics.contacts,)),
            *((group, (topology.kafka.topics.site_writes,)) for group in site_writer_groups(topology))]


def evaluate(reading: GroupOffsets, window: LagWindow) -> GroupLag:
    """Add the reading to the window and judge every partition and the group over it."""
    partitions = []
    for p in reading.partitions:
        key = (reading.group, p.topic, p.partition)
        window.add(key, Sample(at=reading.at, offset=p.committed, lag=p.lag, owned=p.owner is not None))
        partitions.append(PartitionLag(
            topic=p.topic, partition=p.partition, committed=p.committed, log_end=p.log_end, lag=p.lag,
            lag_seconds=round(p.lag_seconds(reading.at), 3), status=window.status(key), owner=p.owner,
        ))
    keys = [(reading.group, p.topic, p.partition) for p in reading.partitions]
    return GroupLag(
        group=reading.group, status=group_status(p.status for p in partitions), state=reading.state,
        members=reading.members, lag=sum(p.lag for p in partitions),
        lag_seconds=max((p.lag_seconds for p in partitions), default=0.0),
        samples=max((len(window.samples(key)) for key in keys), default=0),
        window_seconds=round(max((window.span(key) for key in keys), default=0.0), 3),
        error=None, partitions=tuple(partitions),
    )


def unreadable(group: str, error: str) -> GroupLag:
    return GroupLag(group=group, status=Status.ERR, state=None, members=0, lag=0, lag_seconds=0.0, samples=0,
                    window_seconds=0.0, error=error, partitions=())


# --- output ---------------------------------------------------------------------------------------

def lag_table(groups: Sequence[GroupLag]) -> str:
    rows = [(g.group, p.topic, str(p.partition), _offset(p.committed), str(p.log_end), str(p.lag),
             f"{p.lag_seconds:.1f}", str(p.status), p.owner or "-") for g in groups for p in g.partitions]
    headers = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "LAG-SECONDS", "STATUS",
               "OWNER")
    body = table(headers, rows) if rows else ""
    return "\n".join(filter(None, [body, *(group_summary(g) for g in groups)]))


def group_summary(group: GroupLag) -> str:
    if group.error is not None:
        return f"group {group.group}: {group.status} (cannot read: {group.error})"
    return (f"group {group.group}: {group.status} ({group.state}, {_count(group.members, 'member')}; "
            f"lag {_count(group.lag, 'record')}, oldest {group.lag_seconds:.1f} s; "
            f"{_count(group.samples, 'sample')} over {group.window_seconds:.1f} s)")


def lag_json(groups: Sequence[GroupLag], at: float, *, indent: bool = True) -> str:
    document = {"at": datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds"),
                "groups": [asdict(group) for group in groups]}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 if indent else 0).decode()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _offset(offset: int | None) -> str:
    return "-" if offset is None else str(offset)


# --- the command ----------------------------------------------------------------------------------

class LagMonitor:
    """Samples idsync's groups into one sliding window."""

    def __init__(self, reader: GroupLagReader, groups: Sequence[tuple[str, tuple[str, ...]]], window: int) -> None:
        self._reader = reader
        self._groups = groups
        self._window = LagWindow(window)

    async def sample(self) -> list[GroupLag]:
        results = []
        for group, topics in self._groups:
            try:
                results.append(evaluate(await self._reader.read(group, topics), self._window))
            except (GroupReadError, KafkaError) as exc:
                results.append(unreadable(group, str(exc) or type(exc).__name__))
        return results


async def show_lag(
    topology: Topology, *, json: bool = False, watch: bool = False, samples: int | None = None,
    interval: float | None = None, out: Callable[[str], None] = print,
    reader: Callable[[Topology], GroupLagReader] = lambda t: GroupLagReader(client_options(t.kafka)),
) -> int:
    """Print the lag once, judged over `samples` samples `interval` seconds apart; with `watch`,
    print it after every sample (from the second on) until cancelled, over a sliding window."""
    samples = samples or (WATCH_SAMPLES if watch else SAMPLES)
    interval = interval if interval is not None else (WATCH_INTERVAL if watch else INTERVAL)
    probe = reader(topology)
    try:
        await probe.start()
    except KafkaError as exc:
        print(f"cannot reach Kafka at {topology.kafka.bootstrap_servers}: {exc}", file=sys.stderr)
        return 1
    try:
        monitor = LagMonitor(probe, watched_groups(topology), samples)
        taken = 0
        while True:
            groups = await monitor.sample()
            taken += 1
            done = not watch and taken >= samples
            if done or (watch and taken >= min(2, samples)):
                at = datetime.now(timezone.utc).timestamp()
                out(lag_json(groups, at, indent=not watch) if json else _stamped(lag_table(groups), at, watch))
            if done:
                return 0
            await asyncio.sleep(interval)
    finally:
        await probe.stop()


def _stamped(text: str, at: float, watch: bool) -> str:
    if not watch:
        return text
    return f"{datetime.fromtimestamp(at, timezone.utc).strftime('%Y-%m-%d %H:%M:%SZ')}\n{text}\n"

