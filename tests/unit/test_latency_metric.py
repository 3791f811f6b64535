"""idsync_sink_latency_seconds: the source's changed_at travels to the contact state, and the writer measures from it."""

from datetime import datetime, timezone

import orjson
from prometheus_client import REGISTRY

from streams.events import ChangeOp, ContactState, DirectoryChange, ObjectKind
from streams.monitoring.metrics import observe_sink_latency
from streams.rules.metaverse import SourceObject, apply_change
from streams.rules.person import Connector, newest_change


def connector(anchor: str, changed_at: str | None) -> Connector:
    return Connector(anchor=anchor, forest="a", central=False, kind=ObjectKind.USER, dn="cn=x", position="1",
                     changed_at=changed_at)


def test_the_newest_change_is_compared_as_a_time_not_as_text():
    assert newest_change([connector("1", "2026-12-04T06:00:00.5Z"), connector("2", "2026-12-04T06:00:00+00:00"),
                          connector("3", None), connector("4", "not a time")]) == "2026-12-04T06:00:00.5Z"
    assert newest_change([connector("1", None)]) is None
    assert Connector.from_dict(connector("1", "2026-12-04T06:00:00Z").to_dict()).changed_at == "2026-12-04T06:00:00Z"


def test_contact_state_carries_changed_at_and_reads_one_without_it():
    state = ContactState(anchor="p", present=False, container_dn="", changed_at="2026-12-04T06:00:00Z")
    assert ContactState.from_bytes(state.to_bytes()) == state
    older = b'{"schema":"idsync.contact-state","version":1,"anchor":"p","present":false,"container_dn":""}'
    assert ContactState.from_bytes(older).changed_at is None


def count(sink: str) -> float:
    return REGISTRY.get_sample_value("idsync_sink_latency_seconds_count", {"sink": sink}) or 0.0


def test_latency_is_observed_from_the_source_time():
    before = REGISTRY.get_sample_value("idsync_sink_latency_seconds_sum", {"sink": "test-sink"}) or 0.0
    at = 1_796_000_000.0
    changed = datetime.fromtimestamp(at - 2.5, timezone.utc).isoformat().replace("+00:00", "Z")
    observe_sink_latency("test-sink", changed, now=at)
    observe_sink_latency("test-sink", None, now=at)
    observe_sink_latency("test-sink", "garbage", now=at)
    assert count("test-sink") == 1
    assert REGISTRY.get_sample_value("idsync_sink_latency_seconds_sum", {"sink": "test-sink"}) - before == 2.5


def change(op, position: str, changed_at: str, **attributes) -> DirectoryChange:
    return DirectoryChange(forest="a", object_id="u1", op=op, kind=ObjectKind.USER, dn="cn=u1,dc=a",
                           attributes={k: (v,) for k, v in attributes.items()}, position=position,
                           changed_at=changed_at)


def test_the_metaverse_object_keeps_the_time_of_its_latest_change_and_reads_an_older_entry_without_it():
    added = apply_change(None, change(ChangeOp.ADD, "001", "2026-12-04T06:00:00Z", mail="u@a"))
    assert added.changed_at == "2026-12-04T06:00:00Z"
    modified = apply_change(added, change(ChangeOp.MODIFY, "002", "2026-12-04T06:05:00Z"))
    assert modified.changed_at == "2026-12-04T06:05:00Z"
    assert SourceObject.from_bytes(modified.to_bytes()) == modified
    older = {**orjson.loads(modified.to_bytes())}
    del older["changed_at"]
    assert SourceObject.from_bytes(orjson.dumps(older)).changed_at is None
