"""`idsync lag` without a broker: readings judged over a window, the table and the JSON, the groups
watched, and the command's sampling. (Against the real broker, and compared with Kafka's own
ConsumerGroupCommand: tests/integration/test_lag.py.)"""

from __future__ import annotations

import json

from idsync import cli
from idsync.lag import evaluate, lag_json, lag_table, show_lag, unreadable, watched_groups
from streams.config.topology import parse_topology
from streams.kafka.group_lag import GroupOffsets, GroupReadError, PartitionOffsets
from streams.monitoring.lag_status import LagWindow, Status
from tests.unit.test_topology import MINIMAL

TOPOLOGY = parse_topology(MINIMAL)
T0 = 1_796_000_000.0  # 2026-11-30T00:53:20Z


def offsets(partition: int, committed: int | None, end: int, *, oldest_ms: int | None = None,
            owner: str | None = "idsync@127.0.0.1", topic: str = "idsync.central-contacts") -> PartitionOffsets:
    return PartitionOffsets(topic=topic, partition=partition, committed=committed, log_start=0, log_end=end,
                            oldest_unconsumed_ms=oldest_ms, owner=owner)


def reading(at: float, *partitions: PartitionOffsets, group: str = "idsync-contact-writer",
            state: str = "Stable", members: int = 1) -> GroupOffsets:
    return GroupOffsets(group=group, at=at, state=state, members=members, partitions=partitions)


def test_lag_is_end_minus_the_committed_offset_and_its_age_the_oldest_unconsumed_record():
    behind = offsets(0, 10, 15, oldest_ms=int((T0 - 42.5) * 1000))
    assert (behind.lag, behind.lag_seconds(T0)) == (5, 42.5)
    caught_up = offsets(1, 15, 15)
    assert (caught_up.lag, caught_up.lag_seconds(T0)) == (0, 0.0)
    never_committed = PartitionOffsets(topic="t", partition=0, committed=None, log_start=3, log_end=9,
                                       oldest_unconsumed_ms=None, owner=None)
    assert (never_committed.resume, never_committed.lag) == (3, 6)


def test_a_stopped_group_goes_to_stop_while_its_lag_grows():
    window = LagWindow(3)
    stopped = None
    for i, end in enumerate((12, 15, 19)):
        stopped = evaluate(reading(T0 + i, offsets(0, 10, end, oldest_ms=int(T0 * 1000) - 5000, owner=None),
                                   offsets(1, 7, 7, owner=None), state="Empty", members=0), window)
    assert stopped.status is Status.STOP
    assert [(p.lag, p.status) for p in stopped.partitions] == [(9, Status.STOP), (0, Status.OK)]
    assert (stopped.lag, stopped.lag_seconds, stopped.samples, stopped.window_seconds) == (9, 7.0, 3, 2.0)


def test_table_lists_every_partition_then_a_line_per_group():
    window = LagWindow(3)
    writer = evaluate(reading(T0, offsets(0, 10, 10), offsets(1, None, 4, oldest_ms=int(T0 * 1000) - 1500, owner=None)),
                      window)
    broken = unreadable("idsync", "topic 'idsync.directory-changes' does not exist (error 3)")
    assert lag_table([writer, broken]).splitlines() == [
        "GROUP                  TOPIC                    PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  LAG-SECONDS  STATUS  OWNER",
        "idsync-contact-writer  idsync.central-contacts  0          10              10              0    0.0          OK      idsync@127.0.0.1",
        "idsync-contact-writer  idsync.central-contacts  1          -               4               4    1.5          OK      -",
        "group idsync-contact-writer: OK (Stable, 1 member; lag 4 records, oldest 1.5 s; 1 sample over 0.0 s)",
        "group idsync: ERR (cannot read: topic 'idsync.directory-changes' does not exist (error 3))",
    ]


def test_json_has_every_figure_of_every_partition():
    group = evaluate(reading(T0, offsets(0, 10, 12, oldest_ms=int(T0 * 1000) - 250)), LagWindow(3))
    document = json.loads(lag_json([group], T0))
    assert document["at"] == "2026-11-30T00:53:20+00:00"
    assert document["groups"] == [{
        "group": "idsync-contact-writer", "status": "OK", "state": "Stable", "members": 1, "lag": 2,
        "lag_seconds": 0.25, "samples": 1, "window_seconds": 0.0, "error": None,
        "partitions": [{"topic": "idsync.central-contacts", "partition": 0, "committed": 10, "log_end": 12, "lag": 2,
                        "lag_seconds": 0.25, "status": "OK", "owner": "idsync@127.0.0.1"}],
    }]


def test_the_groups_are_the_engines_on_its_five_topics_and_the_contact_writers():
    (engine, engine_topics), (writer, writer_topics) = watched_groups(TOPOLOGY)
    assert engine == "idsync" and len(engine_topics) == 7 and "idsync.directory-changes" in engine_topics
    assert (writer, writer_topics) == ("idsync-contact-writer", ("idsync.central-contacts",))


def test_with_a_sites_section_each_site_stores_writer_is_watched_on_the_site_writes_topic():
    data = dict(MINIMAL, sites={"stores": [{"name": "intranet", "url": "/var/lib/idsync/sites.db"},
                                           {"name": "teams", "url": "postgresql://idsync@db:5432/sites"}]})
    groups = watched_groups(parse_topology(data))
    assert groups[:2] == watched_groups(TOPOLOGY)
    assert groups[2:] == [("idsync-site-writer-intranet", ("idsync.site-writes",)),
                          ("idsync-site-writer-teams", ("idsync.site-writes",))]


class FakeReader:
    """Readings of the contact writer's group whose end offset grows by 2 a sample; the engine's
    group cannot be read."""

    def __init__(self) -> None:
        self.reads, self.stopped = 0, False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def read(self, group: str, topics: tuple[str, ...]) -> GroupOffsets:
        if group == "idsync":
            raise GroupReadError("topic 'idsync.directory-changes' does not exist (error 3)")
        self.reads += 1
        return reading(T0 + self.reads, offsets(0, 10, 10 + 2 * self.reads, owner=None), state="Empty", members=0)


async def test_one_invocation_judges_its_samples_together_and_prints_once():
    fake, printed = FakeReader(), []
    code = await show_lag(TOPOLOGY, json=True, samples=3, interval=0.01, out=printed.append, reader=lambda _: fake)
    assert (code, fake.reads, fake.stopped, len(printed)) == (0, 3, True, 1)
    groups = {g["group"]: g for g in json.loads(printed[0])["groups"]}
    assert groups["idsync"]["status"] == "ERR" and "does not exist" in groups["idsync"]["error"]
    assert (groups["idsync-contact-writer"]["status"], groups["idsync-contact-writer"]["lag"]) == ("STOP", 6)


async def test_watch_prints_after_every_sample_from_the_second_on(monkeypatch):
    fake, printed = FakeReader(), []

    def out(text: str) -> None:
        printed.append(text)
        if len(printed) == 3:
            raise KeyboardInterrupt

    try:
        await show_lag(TOPOLOGY, json=True, watch=True, samples=2, interval=0.01, out=out, reader=lambda _: fake)
    except KeyboardInterrupt:
        pass
    assert (fake.reads, fake.stopped) == (4, True)
    lines = [json.loads(text) for text in printed]  # one JSON object a line
    assert all("\n" not in text for text in printed)
    assert [[g["samples"] for g in line["groups"] if g["group"] != "idsync"] for line in lines] == [[2], [2], [2]]


def test_the_window_needs_two_samples(capsys):
    try:
        cli.main(["lag", "--samples", "1", "--topology", "x.yaml"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "at least 2" in capsys.readouterr().err
