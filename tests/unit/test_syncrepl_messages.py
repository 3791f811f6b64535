"""How the push reader turns sync messages into a batch: which cookie may become the position.

The rule under test: a batch's position never covers a change that is not in the batch or before
it. Message dicts are shaped as connectors.ldap.persistent delivers them.
"""

import asyncio

import orjson
import pytest

from connectors.ldap.scope import ForestScope
from connectors.openldap.rfc4533 import (
    SYNC_INFO_OID,
    SYNC_STATE_OID,
    SyncInfo,
    SyncInfoKind,
    SyncState,
    SyncStateControl,
    encode_sync_info,
    encode_sync_state,
)
from connectors.openldap.syncrepl import AccesslogSyncReader, _cookie, _position, _SyncStream
from streams.config.forests import ChangeCapture, Forest
from streams.config.security import Secret
from streams.contracts import RejectedRecord, RetriableError
from streams.events import ChangeOp, ObjectKind

BASE = "ou=people,dc=x"
LOG_UUID = "6b1e3c8e-0d2a-4c1b-9a55-0f6a7e1d2c3b"


def cookie(n: int) -> bytes:
    return f"rid=000,csn=20261122050422.{n:06d}Z#000000#000#000000".encode()


def reader_forest() -> Forest:
    return Forest(
        name="x",
        role="user",
        url="ldap://127.0.0.1:1",
        base_dn=BASE,
        bind_dn="cn=admin,dc=x",
        password=Secret(env="IDSYNC_UNUSED_PASSWORD"),
        change_capture=ChangeCapture(
            mode="accesslog-sync", poll_interval_seconds=0.1, overlap_seconds=2.0, accesslog_base="cn=accesslog"
        ),
        contacts_ou=None,
    )


@pytest.fixture(autouse=True)
def known_kinds(monkeypatch):
    """No directory answers here: the kind of an object first met in a modify is 'looked up' as a user."""
    monkeypatch.setattr(ForestScope, "_lookup_kinds", lambda scope, ids: dict.fromkeys(ids, ObjectKind.USER))


@pytest.fixture
def reader() -> AccesslogSyncReader:
    return AccesslogSyncReader(reader_forest())


def entry(n: int, *, dn: str = f"uid=u,{BASE}", state: SyncState = SyncState.ADD, cookie_: bytes | None = None, control: bytes | None = None, **raw) -> dict:
    attributes = {
        "entryCSN": [csn(n).encode()],
        # Arrived in the reverse order: the position must be where the write committed.
        "reqStart": [f"20261122050422.{1000 - n:06d}Z".encode()],
        "reqType": [b"modify"],
        "reqDN": [dn.encode()],
        "reqEntryUUID": [b"ece5c9ac-7a7d-103f-8f6f-3b1f2e0c7a11"],
        "reqMod": [f"description:= {n}".encode()],
    } | raw
    value = control if control is not None else encode_sync_state(SyncStateControl(state=state, entry_uuid=LOG_UUID, cookie=cookie_))
    return {
        "type": "searchResEntry",
        "dn": f"reqStart=20261122050422.{1000 - n:06d}Z,cn=accesslog",
        "raw_attributes": attributes,
        "controls": {SYNC_STATE_OID: {"value": value}},
    }


def csn(n: int) -> str:
    return f"20261122050423.{n:06d}Z#000000#000#000000"


def info(kind: SyncInfoKind, cookie_: bytes | None = None) -> dict:
    return {"type": "intermediateResponse", "responseName": SYNC_INFO_OID, "responseValue": encode_sync_info(SyncInfo(kind=kind, cookie=cookie_))}


def test_each_entry_carries_its_cookie_so_the_last_one_covers_the_batch(reader):
    received = reader._decode([entry(1, cookie_=cookie(1)), entry(2, cookie_=cookie(2))])
    assert [c.position for c in received.changes] == [csn(1), csn(2)]
    assert [c.op for c in received.changes] == [ChangeOp.MODIFY, ChangeOp.MODIFY]
    assert received.cookie == cookie(2) and not received.uncovered


def test_a_change_after_the_newest_cookie_is_uncovered(reader):
    received = reader._decode([entry(1, cookie_=cookie(1)), entry(2)])
    assert len(received.changes) == 2
    assert received.cookie == cookie(1) and received.uncovered


def test_the_refresh_end_covers_entries_sent_without_cookies(reader):
    received = reader._decode([entry(1), entry(2), info(SyncInfoKind.REFRESH_DELETE, cookie(2))])
    assert len(received.changes) == 2 and received.cookie == cookie(2) and not received.uncovered


def test_a_cookie_without_csn_is_no_position(reader):
    # slapd's "rid=000": resuming from it would replay the whole log.
    received = reader._decode([entry(1, cookie_=cookie(1)), entry(2, cookie_=b"rid=000"), info(SyncInfoKind.NEW_COOKIE, b"rid=000")])
    assert received.cookie == cookie(1) and received.uncovered


def test_purged_log_records_are_no_change_but_advance_the_cookie(reader):
    received = reader._decode([entry(1, state=SyncState.DELETE, cookie_=cookie(5))])
    assert received.changes == () and received.cookie == cookie(5) and not received.uncovered


def test_changes_outside_base_dn_are_dropped_without_leaving_anything_uncovered(reader):
    received = reader._decode([entry(1, cookie_=cookie(1)), entry(2, dn="uid=v,ou=elsewhere,dc=x")])
    assert len(received.changes) == 1 and received.cookie == cookie(1) and not received.uncovered


def test_a_record_that_cannot_be_decoded_is_rejected_and_the_stream_goes_on(reader):
    broken = entry(2, cookie_=cookie(2), reqType=[], reqMod=[b"\xff\xfe not an attribute"])
    received = reader._decode([entry(1, cookie_=cookie(1)), broken, entry(3, cookie_=cookie(3))])
    assert [c.position for c in received.changes] == [csn(1), csn(3)]
    (rejected,) = received.rejected
    assert isinstance(rejected, RejectedRecord)
    assert rejected.position == csn(2) and "reqtype" in rejected.reason
    assert orjson.loads(rejected.raw)["reqDN"] == [f"uid=u,{BASE}"]
    assert received.cookie == cookie(3)


def test_a_record_without_its_csn_is_rejected_under_its_log_entry_name(reader):
    received = reader._decode([entry(1, cookie_=cookie(1), entryCSN=[])])
    (rejected,) = received.rejected
    assert rejected.position == entry(1)["dn"] and "entrycsn" in rejected.reason


def test_an_unreadable_sync_state_keeps_the_change_but_not_its_cookie(reader):
    received = reader._decode([entry(1, cookie_=cookie(1)), entry(2, control=b"\x30\x05garbage")])
    assert len(received.changes) == 2 and received.cookie == cookie(1) and received.uncovered


def test_an_unreadable_sync_info_is_skipped(reader):
    garbage = {"type": "intermediateResponse", "responseName": SYNC_INFO_OID, "responseValue": b"\xa9\x00"}
    received = reader._decode([entry(1, cookie_=cookie(1)), garbage])
    assert received.cookie == cookie(1) and not received.uncovered


def test_a_search_done_is_taken_alone_after_what_preceded_it():
    loop = asyncio.new_event_loop()
    try:
        stream = _SyncStream(reader_forest(), cookie=cookie(1), loop=loop)
        done = {"type": "searchResDone", "result": 4096}
        for message in (entry(1), entry(2), done):
            stream._receive(message)
        assert [m["type"] for m in stream.take(10)] == ["searchResEntry", "searchResEntry"]
        assert stream.take(10) == [done]
        assert stream.take(10) == []
    finally:
        loop.close()


def test_a_batch_stops_at_its_size():
    loop = asyncio.new_event_loop()
    try:
        stream = _SyncStream(reader_forest(), cookie=cookie(1), loop=loop)
        for n in range(5):
            stream._receive(entry(n))
        assert len(stream.take(3)) == 3 and len(stream.take(3)) == 2
    finally:
        loop.close()


@pytest.mark.parametrize("raw", [cookie(7), bytes(range(256)), b"rid=001,sid=002,csn=x"])
def test_any_cookie_survives_the_text_position(raw):
    assert _cookie(_position(raw)) == raw



class ScriptedStream:
    """Stands in for the sync connection: hands out scripted messages, records where it started."""

    script = [entry(1, cookie_=cookie(1)), entry(2, cookie_=cookie(2))]
    started: list[bytes] = []

    def __init__(self, forest, *, cookie: bytes, loop) -> None:
        self.loop, self.wake, self.alive = loop, asyncio.Event(), True
        self.messages = list(self.script)
        ScriptedStream.started.append(cookie)

    def open(self) -> None:
        pass

    def take(self, limit: int) -> list[dict]:
        taken, self.messages = self.messages[:limit], self.messages[limit:]
        return taken

    def close(self) -> None:
        pass


@pytest.fixture
def scripted(monkeypatch) -> list[bytes]:
    monkeypatch.setattr("connectors.openldap.syncrepl._SyncStream", ScriptedStream)
    # No directory behind the script to be restored from a backup (tests/integration cover that).
    monkeypatch.setattr(AccesslogSyncReader, "_log_went_on_without", lambda self, position: False)
    ScriptedStream.started = []
    return ScriptedStream.started


async def test_the_stream_continues_only_from_the_position_it_returned(scripted):
    reader = AccesslogSyncReader(reader_forest(), batch_size=1, idle_seconds=0.01)
    start = _position(cookie(0))
    first = await reader.read(start)
    assert first.position == _position(cookie(1)) and scripted == [cookie(0)]
    second = await reader.read(first.position)  # the batch was published: go on
    assert second.position == _position(cookie(2)) and scripted == [cookie(0)]
    # A retry after a failed publish: start over from there, the server sends it all again.
    await reader.read(first.position)
    assert scripted == [cookie(0), cookie(1)]


async def test_after_a_failed_decode_the_next_read_starts_over(scripted, monkeypatch):
    reader = AccesslogSyncReader(reader_forest(), idle_seconds=0.01)
    lookups = iter([RetriableError("lookup failed"), None])

    def record_change(raw, position):
        failure = next(lookups, None)
        if failure is not None:
            raise failure
        return original(raw, position)

    original = reader._scope.record_change
    monkeypatch.setattr(reader._scope, "record_change", record_change)
    start = _position(cookie(0))
    with pytest.raises(RetriableError):
        await reader.read(start)
    batch = await reader.read(start)
    assert scripted == [cookie(0), cookie(0)]
    assert [c.position for c in batch.changes] == [csn(1), csn(2)]
