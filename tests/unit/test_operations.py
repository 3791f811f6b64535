"""The operator commands without a broker: what counts as open or held among each key's latest value,
the tables and JSON, and the verdict. (Reading the latest values off a topic is tested against the
real broker: tests/integration/test_operations.py.)"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from idsync import cli, operations
from idsync.operations import (
    NotHeld, as_json, conflicts_table, held_deletes, held_table, moment, open_conflicts, shorten, table,
    verdict_summary, verdicts,
)
from streams.config.topology import parse_topology
from streams.metaverse_events import Conflict, DeleteRequest, DeleteVerdict
from tests.unit.test_topology import MINIMAL


def conflict(conflict_id: str, *, open: bool = True, at: str = "2026-12-01T10:00:00+00:00", reason: str = "two claims",
             parties: tuple[str, ...] = ("forest-a/1", "forest-a/2"), kind: str = "join-ambiguous") -> Conflict:
    return Conflict(conflict_id=conflict_id, kind=kind, open=open, reason=reason, parties=parties, at=at)


def request(person: str, at: str = "2026-12-01T10:00:00+00:00", dn: str | None = None) -> DeleteRequest:
    return DeleteRequest(person=person, request_id=f"r-{person}", dn=dn or f"cn={person},ou=c,dc=x", requested_at=at)


# --- open and held --------------------------------------------------------------------------------

def test_only_conflicts_whose_latest_value_is_open_are_listed_oldest_first():
    values = {
        b"c1": conflict("c1", open=False).to_bytes(),
        b"c2": conflict("c2", at="2026-12-02T00:00:00+00:00").to_bytes(),
        b"c3": conflict("c3", at="2026-12-01T00:00:00+00:00").to_bytes(),
        b"junk": b"not json",
    }
    conflicts, skipped = open_conflicts(values)
    assert [c.conflict_id for c in conflicts] == ["c3", "c2"]
    assert skipped == 1


def test_held_deletes_are_decoded_oldest_first():
    values = {b"p2": request("p2", "2026-12-02T00:00:00+00:00").to_bytes(), b"p1": request("p1").to_bytes()}
    requests, skipped = held_deletes(values)
    assert [r.person for r in requests] == ["p1", "p2"]
    assert skipped == 0


# --- output ---------------------------------------------------------------------------------------

def test_table_columns_are_aligned_and_lines_not_padded():
    assert table(("A", "BB"), [("xyz", "1"), ("x", "22222")]).splitlines() == [
        "A    BB",
        "xyz  1",
        "x    22222",
    ]


def test_shorten_keeps_one_line_and_marks_a_cut():
    assert shorten("two\nlines  here", 40) == "two lines here"
    assert shorten("a" * 70, 60) == "a" * 59 + "…"
    assert len(shorten("a" * 70, 60)) == 60


def test_moment_is_utc_to_the_second():
    assert moment("2026-12-01T11:00:00.123456+01:00") == "2026-12-01 10:00:00Z"
    assert moment("2026-12-01T10:00:00") == "2026-12-01 10:00:00"
    assert moment("yesterday") == "yesterday"


def test_conflicts_table():
    lines = conflicts_table([
        conflict("join:email:ada@x.org", reason="x" * 100),
        conflict("dn:forest-a/7", kind="dn-taken", parties=("forest-a/7",), reason="cn=Ada is taken"),
    ]).splitlines()
    assert lines[0].split() == ["KIND", "CONFLICT", "ID", "SINCE", "PARTIES", "REASON"]
    assert lines[1] == (
        "join-ambiguous  join:email:ada@x.org  2026-12-01 10:00:00Z  forest-a/1, forest-a/2  " + "x" * 59 + "…"
    )
    assert lines[2] == "dn-taken        dn:forest-a/7         2026-12-01 10:00:00Z  forest-a/7              cn=Ada is taken"
    assert lines[3] == "2 open conflicts"
    assert conflicts_table([]) == "no open conflicts"


def test_held_table():
    lines = held_table([request("p1"), request("person-22", dn="cn=Bo,ou=c,dc=x")]).splitlines()
    assert lines == [
        "PERSON     DN               REQUESTED AT",
        "p1         cn=p1,ou=c,dc=x  2026-12-01 10:00:00Z",
        "person-22  cn=Bo,ou=c,dc=x  2026-12-01 10:00:00Z",
        "2 held deletes",
    ]
    assert held_table([]) == "no held deletes"


def test_json_is_an_array_of_the_events_fields():
    assert json.loads(as_json([conflict("c1")])) == [{
        "conflict_id": "c1", "kind": "join-ambiguous", "open": True, "reason": "two claims",
        "parties": ["forest-a/1", "forest-a/2"], "at": "2026-12-01T10:00:00+00:00",
    }]
    assert json.loads(as_json([request("p1")])) == [
        {"person": "p1", "request_id": "r-p1", "dn": "cn=p1,ou=c,dc=x", "requested_at": "2026-12-01T10:00:00+00:00",
         "hold": False}
    ]
    assert json.loads(as_json([])) == []


# --- verdicts -------------------------------------------------------------------------------------

def test_a_verdict_on_every_held_delete_names_each_one_read_so_none_held_later_is_included():
    held = [request("p1"), request("p2")]
    decisions = verdicts(held, approve=True, persons=[])
    assert decisions == (DeleteVerdict(approve=True, persons=("p1", "p2")),)
    assert verdict_summary(decisions, every_held=True) == (
        "approved all 2 held deletes (a delete held from now on waits for another verdict)")


def test_a_verdict_on_many_held_deletes_is_cut_into_records_of_a_thousand():
    held = [request(f"p{i}") for i in range(2500)]
    decisions = verdicts(held, approve=False, persons=[])
    assert [len(d.persons) for d in decisions] == [1000, 1000, 500]
    assert [p for d in decisions for p in d.persons] == [r.person for r in held]
    assert verdict_summary(decisions, every_held=True).startswith("rejected all 2,500 held deletes")


def test_a_verdict_on_named_persons_names_each_once():
    decisions = verdicts([request("p1"), request("p2")], approve=False, persons=["p2", "p1", "p2"])
    assert decisions == (DeleteVerdict(approve=False, persons=("p2", "p1")),)
    assert verdict_summary(decisions, every_held=False) == "rejected 2 held deletes: p2, p1"


def test_a_person_with_no_held_delete_refuses_the_verdict():
    with pytest.raises(NotHeld) as caught:
        verdicts([request("p1")], approve=True, persons=["p1", "p9", "p8"])
    assert caught.value.persons == ("p9", "p8")


# --- the commands, with the topics in memory ------------------------------------------------------

TOPOLOGY = parse_topology(MINIMAL)


def reading(values: Mapping[str, Mapping[bytes, bytes]]):
    async def read(bootstrap_servers: str, topic: str):
        return values.get(topic, {})
    return read


@pytest.fixture
def sent(monkeypatch) -> list[DeleteVerdict]:
    verdicts: list[DeleteVerdict] = []

    async def send(topology, decisions):
        verdicts.extend(decisions)

    monkeypatch.setattr(operations, "send_verdicts", send)
    return verdicts


async def test_conflicts_command_prints_the_table_or_json(capsys):
    read = reading({TOPOLOGY.kafka.topics.conflicts: {b"c1": conflict("c1").to_bytes()}})
    assert await operations.list_conflicts(TOPOLOGY, read=read) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 open conflict"
    assert await operations.list_conflicts(TOPOLOGY, json=True, read=read) == 0
    assert [c["conflict_id"] for c in json.loads(capsys.readouterr().out)] == ["c1"]
    assert await operations.list_conflicts(TOPOLOGY, read=reading({})) == 0
    assert capsys.readouterr().out == "no open conflicts\n"


async def test_approve_all_reads_the_held_list_first(capsys, sent):
    read = reading({TOPOLOGY.kafka.topics.held_deletes: {b"p1": request("p1").to_bytes(), b"p2": request("p2").to_bytes()}})
    assert await operations.decide_held_deletes(TOPOLOGY, approve=True, read=read) == 0
    assert sent == [DeleteVerdict(approve=True, persons=("p1", "p2"))]
    assert capsys.readouterr().out.startswith("approved all 2 held deletes (")


async def test_nothing_is_sent_when_nothing_is_held(capsys, sent):
    assert await operations.decide_held_deletes(TOPOLOGY, approve=False, read=reading({})) == 0
    assert sent == []
    assert capsys.readouterr().out == "no held deletes to reject\n"


async def test_a_named_person_not_held_sends_nothing_and_exits_2(capsys, sent):
    read = reading({TOPOLOGY.kafka.topics.held_deletes: {b"p1": request("p1").to_bytes()}})
    assert await operations.decide_held_deletes(TOPOLOGY, approve=True, persons=["p1", "p9"], read=read) == 2
    assert sent == []
    err = capsys.readouterr().err
    assert "nothing sent: no held delete for p9" in err


@pytest.mark.parametrize("argv", [
    ["deletes", "approve", "--json"],
    ["deletes", "reject", "--held"],
    ["deletes", "--held", "--person", "p1"],
])
def test_deletes_options_that_do_not_go_together_are_refused(argv, tmp_path):
    with pytest.raises(SystemExit) as caught:
        cli.main([*argv, "--topology", str(tmp_path / "topology.yaml")])
    assert caught.value.code == 2
