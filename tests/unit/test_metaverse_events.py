"""The engine's events: every kind round-trips, and bad records are refused with a reason."""

from __future__ import annotations

import orjson
import pytest

from streams.events import EventDecodeError
from streams.metaverse_events import (
    CentralBarrier,
    Conflict,
    ConnectorState,
    DeleteDecision,
    DeleteRequest,
    DeleteVerdict,
    JoinClaim,
    JoinLink,
    JoinProbe,
    JoinResolve,
    ProbeAnswer,
    decode_engine_event,
)
from streams.rules.join import Claim

CLAIM = Claim(anchor="a/1", claim_id="c1", keys=("email:x", "employee:1"), step=1)
EVENTS = [
    JoinClaim.of(CLAIM),
    JoinResolve.of("email:x", CLAIM, "P"),
    JoinProbe(key="email:x", anchor="a/1", probe_id="p", person="P"),
    JoinLink(anchor="a/1", claim_id="c1", person="P"),
    ProbeAnswer(anchor="a/1", probe_id="p", key="email:x", owner=None),
    ConnectorState(person="P", anchor="a/1", position="7", connector={"anchor": "a/1"}, hold_delete=True),
    CentralBarrier(from_partition=2),
    DeleteRequest(person="P", request_id="P@1", dn=None, requested_at="2026-12-04T00:00:00+00:00"),
    DeleteVerdict(approve=True, persons=("P",)),
    DeleteDecision(person="P", request_id="P@1", approved=False),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_engine_event_round_trips(event):
    assert decode_engine_event(event.to_bytes()) == event


def test_a_conflict_round_trips_and_fields_added_later_default():
    conflict = Conflict(conflict_id="c", kind="same-forest", open=True, reason="r", parties=("P", "a/1"), at="t")
    assert Conflict.from_bytes(conflict.to_bytes()) == conflict
    older = orjson.loads(DeleteRequest(person="P", request_id="r", dn="cn=x", requested_at="t").to_bytes())
    del older["hold"]
    assert DeleteRequest.from_bytes(orjson.dumps(older)).hold is False


@pytest.mark.parametrize(
    "value, reason",
    [
        (b'{"schema": "idsync.nothing", "version": 1}', "unknown schema"),
        (b'{"schema": "idsync.join-link", "version": 2, "anchor": "a", "claim_id": "c", "person": "P"}', "version"),
        (b'{"schema": "idsync.join-link", "version": 1, "anchor": "a", "person": "P"}', "claim_id"),
        (b'{"schema": "idsync.delete-decision", "version": 1, "person": "P", "request_id": "r", "approved": "yes"}',
         "true or false"),
    ],
)
def test_bad_engine_records_are_refused_with_a_reason(value, reason):
    with pytest.raises(EventDecodeError, match=reason):
        decode_engine_event(value)
